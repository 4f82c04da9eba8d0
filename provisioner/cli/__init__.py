"""The command-line edge: the only package that prints or maps errors to exit codes.

Exit codes: 0 ok, 1 something checked or attempted failed, 2 usage or input error.

This module is the root app: its options, and every command and group in the order
'provisioner --help' lists them. The commands live in one module per group beside it;
what they share is in common.py (--format, the error-to-exit-code mapping, the plan ->
confirm -> apply -> emit sequence) and output.py (consoles, escaping, tables, JSON).

Every run pays for what this package imports, and the heavy modules (Ansible runner,
SSH, ACME, HTTP clients, the verifier) are each needed by a few commands only: they
are imported inside the commands that use them. Only what typer evaluates (parameter
annotations and defaults) and the registry every command loads stay at the top.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import (
    alerts,
    backup,
    doctor,
    history,
    lab,
    offboard,
    onboard,
    registry,
    site,
    timers,
    tls,
    verify,
)
from .common import Context

HELP = """Host every agency (OPD) of a regency centrally and prove its site is up.

Onboard gives an agency its subdomain, nginx virtual host, TLS certificate and a
starter site that publishes its public-service standards; sweep verifies every
agency site at once. The inventory (--inventory, default ./inventory) is the
source of truth; run 'provisioner registry check' after editing it.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False, rich_markup_mode=None)

COMMANDS = {"init": registry.init, "plan": onboard.plan, "onboard": onboard.onboard,
            "render": site.render, "access": site.access_command, "verify": verify.verify,
            "sweep": verify.sweep, "history": history.history, "offboard": offboard.offboard,
            "restore": offboard.restore, "renew": tls.renew, "doctor": doctor.doctor,
            "certs": tls.certs, "demo": lab.demo, "report": history.report}
GROUPS = {"lab": lab.lab_app, "registry": registry.registry_app, "alerts": alerts.alerts_app,
          "timers": timers.timers_app, "backup": backup.backup_app}
for name, command in COMMANDS.items():
    app.command(name)(command)
for name, group in GROUPS.items():
    app.add_typer(group, name=name)


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: Path = typer.Option(Path("inventory"), "--inventory", "-i",
                                   envvar="PROVISIONER_INVENTORY",
                                   help="Inventory folder (hosts.yml, group_vars/, agencies/)."),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", envvar="PROVISIONER_STATE_DIR",
                                             help="Where the toolkit keeps keys, archives, history "
                                                  "and lab files [default: state/ beside the "
                                                  "inventory]."),
) -> None:
    ctx.obj = Context(inventory_dir=inventory, state_dir=state_dir)


def main() -> None:
    app(prog_name="provisioner")


if __name__ == "__main__":
    sys.exit(main())
