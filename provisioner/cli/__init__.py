"""The command-line edge: the only module that prints or maps errors to exit codes.

Exit codes: 0 ok, 1 something checked or attempted failed, 2 usage or input error.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import InputError, ProvisionerError, UsageError
from ..plan import ROW_COLUMNS, Plan
from ..registry import load as registry
from ..registry.models import RENEW_DAYS, Agency, Inventory

# Every run pays for what this module imports, and the heavy modules (Ansible runner,
# SSH, ACME, HTTP clients, the verifier) are each needed by a few commands only: they
# are imported inside the commands that use them. Only what typer evaluates (parameter
# annotations and defaults) and the registry every command loads stay at the top.
if TYPE_CHECKING:
    from ..dns import step as dnsops
    from ..hosts import ansible
    from ..lifecycle import onboard as onboarding
    from ..lifecycle.run import StepsResult
    from ..verify import sweep as sweeping
    from ..verify import verifier as verifying

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

HELP = """Host every agency (OPD) of a regency centrally and prove its site is up.

Onboard gives an agency its subdomain, nginx virtual host, TLS certificate and a
starter site that publishes its public-service standards; sweep verifies every
agency site at once. The inventory (--inventory, default ./inventory) is the
source of truth; run 'provisioner registry check' after editing it.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False, rich_markup_mode=None)
lab_app = typer.Typer(help="Start, stop and inspect the local lab (real BIND, nginx, "
                           "OpenSSH and Pebble on loopback addresses).", no_args_is_help=True)
registry_app = typer.Typer(help="Validate, list and import the agency registry.",
                           no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts on change after each sweep (e-mail, webhook, "
                              "Telegram): test the channels, see what waits to be sent.",
                         no_args_is_help=True)
timers_app = typer.Typer(help="The systemd timers: hourly sweep with alerts, weekly report "
                              "to leadership, daily certificate renewal, daily backup.",
                         no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(registry_app, name="registry")
app.add_typer(alerts_app, name="alerts")
app.add_typer(timers_app, name="timers")
backup_app = typer.Typer()  # its help: backup_run's docstring
app.add_typer(backup_app, name="backup")


class Format(str, Enum):
    table = "table"
    json = "json"


@dataclass
class Context:
    inventory_dir: Path
    state_dir: Path | None

    def inventory(self, placement_only: bool = False) -> Inventory:
        return registry.load_inventory(self.inventory_dir, self.state_dir,
                                       placement_only=placement_only)

    @property
    def resolved_state_dir(self) -> Path:
        return (self.state_dir or registry.default_state_dir(self.inventory_dir)).resolve()


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


def handles_errors(func: Callable) -> Callable:
    """Map the package's exceptions to one clear message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            for problem in exc.problems:
                err_console.print(f"error: {visible(problem)}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except ProvisionerError as exc:
            err_console.print(f"error: {visible(exc)}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: re-run the same command to converge")
            raise typer.Exit(130) from None

    return wrapper


def emit_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def visible(value: Any) -> str:
    """Text for a terminal: every character that is not printable (C0 and C1 controls,
    ESC, DEL, bidirectional overrides, line breaks) shown as its escape, so that nothing a
    site, certificate or file holds can move the cursor, recolour or retitle the terminal."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def cell(value: Any, style: str = "") -> Text:
    """A table cell or title: escaped (``visible``) and never read as Rich markup."""
    return Text(visible(value), style=style)


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    t = Table(title=cell(title) if title else None)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    console.print(t)


def command_line() -> str:
    """How this run was started, for the lock file and the audit log."""
    return " ".join(["provisioner", *sys.argv[1:]])


BREAK_LOCK_OPTION = typer.Option(False, "--break-lock",
                                 help="Take over the inventory lock of a run that died "
                                      "without releasing it (its PID must be gone).")


# --------------------------------------------------------------------------- registry

@registry_app.command("check")
@handles_errors
def registry_check(ctx: typer.Context,
                   fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Validate the whole inventory and report every problem (file:line: field: message)."""
    inv = ctx.obj.inventory()
    hosted = sum(1 for a in inv.agencies.values() if a.hosted)
    if fmt is Format.json:
        emit_json({"ok": True, "agencies": len(inv.agencies), "hosted": hosted,
                   "hosts": len(inv.hosts), "zone": inv.settings.zone})
        return
    console.print(f"ok: {len(inv.agencies)} agencies ({hosted} hosted here) on "
                  f"{len(inv.hosts)} hosts, zone {inv.settings.zone}")


@registry_app.command("list")
@handles_errors
def registry_list(ctx: typer.Context,
                  fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """List the agencies: slug, name, site, host, services."""
    inv = ctx.obj.inventory()
    rows = [{"slug": a.slug, "name": a.name, "short_name": a.short_name, "fqdn": a.fqdn, "host": a.host,
             "external": a.external_url, "services": len(a.services),
             "status": "offboarded" if a.offboarded else "active", "sample": a.sample}
            for a in inv.agencies.values()]
    if fmt is Format.json:
        emit_json(rows)
        return
    table(["slug", "name", "site", "host", "services", "status"],
          [[r["slug"], r["short_name"], r["fqdn"], r["host"] or f"external: {r['external']}",
            r["services"], r["status"]] for r in rows],
          title=f"{len(rows)} agencies in {inv.settings.zone}")


@registry_app.command("export")
@handles_errors
def registry_export(ctx: typer.Context,
                    agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
                    all_: bool = typer.Option(False, "--all", help="Every active agency."),
                    output: Path = typer.Option(..., "--output", "-o", metavar="FILE.xlsx"),
                    fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Write a workbook an office clerk can fill in (Petunjuk, Instansi, Layanan, Pengaduan).

    Return it with 'provisioner registry import FILE.xlsx': an export imported
    without edits changes nothing.
    """
    from ..registry import xlsx

    if bool(agencies) == all_:
        raise UsageError("name the agencies or pass --all", hint="e.g. registry export dinkes -o dinkes.xlsx")
    if output.suffix.lower() != ".xlsx":
        raise UsageError(f"{output}: the output must end in .xlsx")
    inv = ctx.obj.inventory()
    counts = xlsx.export_workbook(inv, inv.select(agencies or [], all_=all_), output)
    if fmt is Format.json:
        emit_json({"written": str(output), "rows": counts})
        return
    console.print(f"wrote {visible(output)}: " + ", ".join(f"{n} {sheet}" for sheet, n in counts.items()),
                  markup=False)


@registry_app.command("import")
@handles_errors
def registry_import(ctx: typer.Context, source: Path = typer.Argument(..., metavar="FILE.xlsx|FILE.csv"),
                    yes: bool = typer.Option(False, "--yes", "-y",
                                             help="Write a workbook's changes (without it: show them)."),
                    force: bool = typer.Option(False, "--force",
                                               help="CSV: update existing agency files."),
                    skip_bad: bool = typer.Option(False, "--skip-bad",
                                                  help="CSV: write the usable agencies and report "
                                                       "the rows that could not be used."),
                    dry_run: bool = typer.Option(False, "--dry-run",
                                                 help="Validate and show what would be written."),
                    fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Create or update agency files from a workbook (.xlsx) or a CSV.

    A workbook (from 'registry export') updates existing agencies and adds new ones:
    every cell is checked (problems name Sheet!Cell), the change to each file is shown
    as a diff, and files are written only with --yes.

    A CSV (UTF-8, one row per service) creates agency files (--force: also updates
    existing ones) and writes unless --dry-run. Columns: slug, name, short_name, host
    (or external), address, phone, email, opening_hours, head_name, head_title,
    maklumat, service_name, persyaratan, prosedur, jangka_waktu, biaya, produk,
    pengaduan (optional: subdomain, description, sample, service_description and the
    management components). List cells separate items with line breaks or " | ".
    """
    from ..registry import csvimport, xlsx

    inv = ctx.obj.inventory()
    workbook = source.suffix.lower() == ".xlsx"
    if workbook and (force or skip_bad):
        raise UsageError("--force and --skip-bad are for CSV files",
                         hint="a workbook always updates existing agencies; fix the cells it names")
    if workbook:
        agencies, refused = xlsx.read_workbook(source)
        plan = csvimport.plan_import(inv, agencies, source=source.name, update_existing=True,
                                     read_problems=refused)
        apply = yes and not dry_run
    else:
        plan = csvimport.plan_import(inv, csvimport.read_csv(source), source=source.name,
                                     update_existing=force, skip_bad=skip_bad)
        apply = not dry_run
    result = csvimport.apply_plan(plan) if apply else plan
    if fmt is Format.json:
        emit_json({"written": [str(p) for p in result.written],
                   "would_write": [str(p) for p in result.would_write],
                   "unchanged": [str(p) for p in result.unchanged],
                   "diffs": {str(c.path): c.diff for c in result.changes} if workbook else {},
                   "skipped": [str(p) for p in result.skipped_rows]})
    else:
        _print_import(result, workbook=workbook, applied=apply)
    if result.skipped_rows:
        raise typer.Exit(2)


def _print_import(result: Any, *, workbook: bool, applied: bool) -> None:
    for change in result.changes if workbook else []:
        for line in change.diff.splitlines():
            console.print(visible(line), markup=False)
    for path in result.would_write:
        console.print(f"would write {visible(path)}", markup=False)
    for path in result.written:
        console.print(f"wrote {visible(path)}", markup=False)
    for problem in result.skipped_rows:
        err_console.print(f"skipped: {visible(problem)}", markup=False)
    if workbook:
        console.print(f"{len(result.unchanged)} agencies unchanged, {len(result.changes)} changed")
        if result.changes and not applied:
            console.print("nothing written; run again with --yes")


@app.command("init")
@handles_errors
def init(directory: Path = typer.Argument(..., metavar="DIR"),
         zone: str = typer.Option(..., "--zone", help="The regency's zone, e.g. paserkab.go.id.")) -> None:
    """Create a fresh inventory for another regency, with commented examples."""
    from ..registry import init as scaffold

    for path in scaffold.create_inventory(directory, zone):
        console.print(f"wrote {path}")
    console.print(f"next: create the TSIG key file named in {directory}/group_vars/all.yml, "
                  f"edit the files, then run 'provisioner --inventory {directory} registry check'")


# --------------------------------------------------------------------------- lab

def _lab(ctx: typer.Context):
    from ..lab.control import Lab  # imported here: the lab's dependencies are not needed elsewhere

    return Lab(ctx.obj.inventory())


def _server_rows(servers: Any) -> list[list[Any]]:
    return [[s.name, s.role, s.address, s.pid, s.action] for s in servers]


@lab_app.command("up")
@handles_errors
def lab_up(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Start the lab servers (idempotent: servers already up are left alone)."""
    report = _lab(ctx).up()
    if fmt is Format.json:
        emit_json(dataclasses.asdict(report))
        return
    table(["server", "role", "address", "pid", "result"], _server_rows(report.servers),
          title=f"lab up in {report.seconds:.2f} s ({report.lab_dir})")
    if report.addresses_added:
        console.print("added to lo: " + ", ".join(report.addresses_added))


@lab_app.command("down")
@handles_errors
def lab_down(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Stop the servers the lab started and remove the loopback addresses it added."""
    report = _lab(ctx).down()
    if fmt is Format.json:
        emit_json(dataclasses.asdict(report))
        return
    table(["server", "role", "address", "pid", "result"], _server_rows(report.servers),
          title=f"lab down ({report.lab_dir})")
    if report.ssh_masters_closed:
        console.print(f"closed {report.ssh_masters_closed} ssh control master(s)")
    if report.addresses_removed:
        console.print("removed from lo: " + ", ".join(report.addresses_removed))


@lab_app.command("status")
@handles_errors
def lab_status(ctx: typer.Context,
               fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Show each lab server's address, PID and health (from a real probe).

    Exit code 1 when any server is down or unhealthy.
    """
    statuses = _lab(ctx).status()
    healthy = all(s.healthy for s in statuses)
    if fmt is Format.json:
        emit_json({"healthy": healthy, "servers": [dataclasses.asdict(s) for s in statuses]})
    else:
        table(["server", "role", "address", "pid", "health", "detail"],
              [[s.name, s.role, s.address, s.pid,
                "healthy" if s.healthy else ("UNHEALTHY" if s.running else "down"), s.detail]
               for s in statuses],
              title="lab status: " + ("all healthy" if healthy else "NOT all healthy"))
    if not healthy:
        raise typer.Exit(1)


@lab_app.command("reset")
@handles_errors
def lab_reset(ctx: typer.Context,
              fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Wipe provisioned sites, agency DNS records and installed certificates; keep keys."""
    report = _lab(ctx).reset()
    if fmt is Format.json:
        emit_json(dataclasses.asdict(report))
        return
    console.print(f"removed {len(report.sites_removed)} vhost(s) and {report.files_removed} "
                  f"entries from site, certificate and challenge folders")
    console.print(f"zone reloaded fresh with serial {report.zone_serial}"
                  + (f" (restarted {', '.join(report.restarted)})" if report.restarted
                     else " (nameservers not running: takes effect at 'lab up')"))
    if report.reloaded:
        console.print("nginx reloaded on " + ", ".join(report.reloaded))


# --------------------------------------------------------------------------- main jobs

ALL_AGENCIES_HELP = ("Every agency in the inventory; records owned for offboarded or removed "
                     "agencies are planned for deletion.")


def _dns_selection(inv: Inventory, slugs: list[str] | None, all_: bool) -> list[Agency] | None:
    """The named agencies, or None for the whole zone (--all)."""
    if all_ and slugs:
        raise UsageError("give agency names or --all, not both")
    if not all_ and not slugs:
        raise UsageError("name at least one agency, or pass --all",
                         hint="run 'provisioner registry list' to see the slugs")
    return None if all_ else inv.select(slugs)


def _show_dns_plan(dns_plan: dnsops.DnsPlan) -> None:
    table(list(ROW_COLUMNS), dns_plan.plan.rows(dns_plan.zone),
          title=f"DNS plan for zone {dns_plan.zone} (serial {dns_plan.serial}); names "
                "relative to the zone")
    counts = ", ".join(f"{n} {action}" for action, n in dns_plan.plan.counts().items())
    console.print(f"{counts}; {dns_plan.owned_records} records owned by this inventory",
                  markup=False)
    if dns_plan.safety:
        console.print(f"safety gate: apply would refuse: {dns_plan.safety} (--force passes)",
                      markup=False)


def _show_onboard_plan(oplan: onboarding.OnboardPlan) -> None:
    if oplan.dns is not None:
        _show_dns_plan(oplan.dns)
    others = [c for c in oplan.plan if c.kind != "dns"]
    shown = [c for c in others if c.action != "noop"]
    if shown:
        table(list(ROW_COLUMNS), [c.row() for c in shown], title="sites, vhosts, certificates")
    if others:
        counts = ", ".join(f"{n} {a}" for a, n in Plan(others).counts().items() if n)
        console.print(f"sites, vhosts, certificates: {counts}", markup=False)
    for host, error in oplan.host_errors.items():
        console.print(f"host {host} cannot be used: {visible(error)}", markup=False)
    for slug, diff in oplan.drift.items():
        console.print(f"{slug}: drift: its vhost was changed by hand (onboarding restores it "
                      "and keeps the edited copy aside):", markup=False)
        for line in diff:
            console.print(f"  {visible(line)}", markup=False)
    for outcome in oplan.skipped:
        console.print(f"{outcome.agency}: {visible(outcome.detail)}", markup=False)
    _show_rate_limits(oplan)


def _deferred(oplan: onboarding.OnboardPlan) -> set[str]:
    """Agencies whose certificate the CA's rate limits leave for a later run."""
    deferred = oplan.budget.deferred if oplan.budget else {}
    return {slug for t in oplan.targets if t.key in deferred for slug in t.agencies}


def _show_rate_limits(oplan: onboarding.OnboardPlan) -> None:
    """How much of each of the CA's limits the run would use; what waits for a later run."""
    if oplan.budget is None or not (oplan.budget.usage or oplan.budget.deferred):
        return
    console.print("CA rate limits:", markup=False)
    for usage in oplan.budget.usage:
        console.print(f"  {visible(usage.line())}", markup=False)
    for target in oplan.targets:
        deferred = oplan.budget.deferred.get(target.key)
        if deferred:
            console.print(f"  {', '.join(target.agencies)}: {visible(deferred.reason)}",
                          markup=False)


def _onboard_progress(event: ansible.Progress) -> None:
    if event.state in ("changed", "failed", "unreachable"):
        err_console.print(f"  {event.host}: {event.task}: {event.state}", markup=False)


def _show_onboard_result(result: onboarding.OnboardResult, inv: Inventory,
                         timings: bool) -> None:
    from ..lifecycle.onboard import PHASES

    summary = result.by_agency()
    rows = []
    for slug, outcome in summary.items():
        agency = inv.agencies.get(slug)
        url = f"https://{agency.fqdn}/" if agency and agency.hosted else outcome.detail
        changed = [o.kind for o in result.outcomes if o.agency == slug and o.status == "changed"]
        steps = outcome.kind if outcome.status == "failed" else ", ".join(changed)
        rows.append([slug, outcome.status, steps,
                     outcome.detail if outcome.status == "failed" else url])
    table(["agency", "status", "steps", "detail / site"], rows, title="result")
    counts = {s: sum(o.status == s for o in summary.values()) for s in ("changed", "ok", "failed")}
    console.print(f"{counts['changed']} changed, {counts['ok']} ok, {counts['failed']} failed; "
                  f"nginx reloads: {sum(result.reloads.values())}", markup=False)
    if timings:
        console.print("timings: " + ", ".join(f"{phase} {result.timings[phase]:.2f} s"
                                              for phase in PHASES
                                              if phase in result.timings), markup=False)


ONLY_HELP = "Run one step only: dns, web, tls or verify (to re-run it)."


@app.command("plan")
@handles_errors
def plan(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
         all_: bool = typer.Option(False, "--all", help=ALL_AGENCIES_HELP),
         only: Optional[str] = typer.Option(None, "--only", help=ONLY_HELP),
         fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Show what onboarding would change, changing nothing.

    DNS records are read from the primary (a signed zone transfer) and listed as
    create / update / delete / conflict / noop with old and new values; a conflict is
    a name in use that this inventory does not own ('onboard --force' adopts it).
    Site files, vhosts and certificates are compared with what each host has (one
    SSH round trip per host); files the agency edited are listed and kept.
    """
    from ..lifecycle import onboard as onboarding

    inv = ctx.obj.inventory()
    steps = (only,) if only else onboarding.STEPS
    with onboarding.Session(inv) as session:
        oplan = session.plan(_dns_selection(inv, agencies, all_), steps=steps)
    if fmt is Format.json:
        emit_json(oplan.to_dict())
        return
    _show_onboard_plan(oplan)


@app.command("onboard")
@handles_errors
def onboard(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
            all_: bool = typer.Option(False, "--all", help=ALL_AGENCIES_HELP),
            dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop."),
            yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
            force: bool = typer.Option(False, "--force",
                                       help="Adopt unowned records and pass the safety gate."),
            only: Optional[str] = typer.Option(None, "--only", help=ONLY_HELP),
            timings: bool = typer.Option(False, "--timings",
                                         help="Print the time each phase took."),
            break_lock: bool = BREAK_LOCK_OPTION,
            fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Give agencies their DNS record, vhost, starter site and certificate, then verify.

    Shows the plan first and asks before applying (unless --yes). Steps: dns (one
    signed update for the zone, then every nameserver is checked), web (one Ansible
    run: each host's files in one transfer, nginx -t before the swap, one reload per
    host), tls (ACME certificates after the pre-order checks, installed 0600, served
    serial compared), verify (as 'provisioner verify'). Re-running converges: a
    second run changes nothing and reloads nothing. Exit 1 when any agency failed;
    agencies that succeeded are kept.
    """
    if fmt is Format.json and not (yes or dry_run):
        raise UsageError("--format json cannot ask for confirmation",
                         hint="add --yes or --dry-run")
    from ..lifecycle import onboard as onboarding

    inv = ctx.obj.inventory()
    steps = (only,) if only else onboarding.STEPS
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else None
    with onboarding.Session(inv, report or (lambda _line: None), command=command_line(),
                            break_lock=break_lock) as session:
        oplan = session.plan(_dns_selection(inv, agencies, all_), steps=steps, force=force)
        if table_output:
            _show_onboard_plan(oplan)
        if dry_run:
            if not table_output:
                emit_json({"plan": oplan.to_dict(), "result": None})
            return
        if oplan.has_changes and not yes and \
                not typer.confirm("Apply this plan?", default=False):
            err_console.print("aborted: nothing was changed")
            raise typer.Exit(1)
        result = session.apply(oplan, force=force,
                               progress=_onboard_progress if table_output else None)
    if table_output:
        _show_onboard_result(result, inv, timings)
    else:
        emit_json(result.to_dict())
    if result.failed:
        raise typer.Exit(1)


@app.command("render")
@handles_errors
def render(ctx: typer.Context, agency: str = typer.Argument(..., help="The agency's slug."),
           output: Path = typer.Option(..., "--output", "-o",
                                       help="Folder to write to: the site goes to site/, the "
                                            "vhost to nginx/<slug>.conf (same-named files are "
                                            "replaced, never written through a symlink; a "
                                            "folder of another user is refused)."),
           tls_ready: bool = typer.Option(True, "--tls/--no-tls",
                                          help="Render the vhost as it is once the certificate "
                                               "is installed (HTTPS, HTTP redirects), or as "
                                               "before it (site served over HTTP)."),
           fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Write an agency's starter site and vhost to a folder for review (no host touched).

    The site is what onboarding installs in <web_root>/<slug>/ on the agency's host,
    including .provisioner-manifest.json (sha256 of every generated file), which lets
    a later onboarding keep pages the agency has edited.
    """
    from ..site import render as site

    inv = ctx.obj.inventory()
    files = site.render_preview(inv.select([agency])[0], inv, tls_ready=tls_ready)
    site.write_files(files, output)
    rows = [{"path": path, "bytes": len(data), "sha256": site.sha256_hex(data)}
            for path, data in sorted(files.items())]
    if fmt is Format.json:
        emit_json({"agency": agency, "output": str(output), "tls_ready": tls_ready,
                   "files": rows})
        return
    table(["file", "bytes", "sha256"], [[r["path"], r["bytes"], r["sha256"][:16]] for r in rows],
          title=f"{agency}: {len(rows)} files written to {output}")


@app.command("access")
@handles_errors
def access_command(ctx: typer.Context, agency: str = typer.Argument(..., help="The agency's slug."),
                   fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """How the agency's staff reach its site's files over SFTP (in Bahasa Indonesia):
    host, port, user, the host key's SHA256 fingerprint, and what goes where."""
    from ..lifecycle import access, access_plan

    inv = ctx.obj.inventory()
    info = access_plan.access_info(inv, inv.select([agency])[0])
    if fmt is Format.json:
        emit_json(info.as_json())
        return
    console.print(access.access_text(info), markup=False, highlight=False, end="")


class SweepFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    junit = "junit"
    prom = "prom"
    html = "html"


class Lang(str, Enum):
    id = "id"
    en = "en"


STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "error": "magenta",
                "skip": "dim"}
CA_OPTION = typer.Option([], "--ca", exists=True, dir_okay=False, metavar="FILE",
                         help="Also trust this CA certificate (PEM); repeatable.")
TIMEOUT_OPTION = typer.Option(5.0, "--timeout", min=0.1, help="Seconds per network step.")
DEADLINE_OPTION = typer.Option(0.0, "--deadline", min=0.0,
                               help="Seconds for one whole site, after which it gets an error "
                                    "naming the step that was running [default: twice "
                                    "--timeout].")


def _verify_inventory(ctx: Context, target: str) -> Inventory | None:
    """A URL can be verified without an inventory; an agency name needs one."""
    if "://" in target and not ctx.inventory_dir.exists():
        return None
    return ctx.inventory()


def _checks_table(result: verifying.AgencyResult) -> None:
    t = Table(title=cell(f"{result.agency or result.url}: {result.url}"))
    for column in ("check", "status", "detail"):
        t.add_column(column, overflow="fold")
    for check in result.checks:
        t.add_row(check.id, cell(check.status.value, STATUS_STYLE[check.status.value]),
                  cell(check.detail))
    console.print(t)


@app.command("verify")
@handles_errors
def verify(ctx: typer.Context, target: str = typer.Argument(..., metavar="AGENCY|URL"),
           fmt: Format = typer.Option(Format.table, "--format", "-f"),
           ca: list[Path] = CA_OPTION, timeout: float = TIMEOUT_OPTION,
           deadline: float = DEADLINE_OPTION) -> None:
    """Check one agency site or URL: DNS, HTTP redirect, TLS, HTTPS and publication.

    AGENCY is a slug or name from the inventory; URL is any http(s) URL, an IP address
    with a port included (its DNS checks are skipped). Names in the inventory's zone are
    resolved only at the zone's own nameservers. Exit 0 when every check passes
    (warnings allowed), 1 when any check fails or could not be run.
    """
    from ..verify import verifier as verifying

    result = verifying.verify_site(_verify_inventory(ctx.obj, target), target, tuple(ca), timeout,
                                   deadline)
    if fmt is Format.json:
        emit_json(result.to_dict())
    else:
        _checks_table(result)
        publication = result.publication
        missing = [item for item, ok in publication.components.items() if not ok]
        cert = result.cert
        console.print(f"active: {'yes' if result.active else 'no'}; publication score "
                      f"{publication.score:g} ({publication.band})"
                      + (f", missing: {', '.join(missing)}" if missing else "")
                      + (f"; certificate expires {cert.not_after:%Y-%m-%d} ({cert.days_left} days)"
                         if cert.not_after else ""), markup=False)
    raise typer.Exit(0 if result.all_pass else 1)


def _sweep_with_progress(inv: Inventory, **options: Any) -> sweeping.SweepResult:
    """Run the sweep, with a progress bar on stderr when it is a terminal."""
    from ..verify import sweep as sweeping

    if not sys.stderr.isatty():
        return sweeping.run_sweep(inv, **options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, agency: str) -> None:
            bar.update(task, completed=done, total=total, description=agency)

        return sweeping.run_sweep(inv, progress=advance, **options)


def _render_sweep(result: sweeping.SweepResult, fmt: SweepFormat, inv: Inventory,
                  lang: Lang) -> str | Iterator[str]:
    if fmt is SweepFormat.json:
        from ..verify.report import json_text

        return json_text({"started_at": result.started_at.isoformat(timespec="seconds"),
                          "finished_at": result.finished_at.isoformat(timespec="seconds"),
                          "scoring_version": result.scoring_version,
                          "summary": result.summary.to_dict(), "records": list(result.records)},
                         indent=2) + "\n"
    if fmt is SweepFormat.html:
        from ..verify.content import load_rules
        from ..verify.history import sweep_trend
        from ..verify.report import html as report_html

        trend = sweep_trend(inv.state_dir)
        return report_html.render(result, trend, load_rules(), inv.settings.zone, lang.value)
    from ..verify.report import jsonl, junit, prom

    if fmt is SweepFormat.jsonl:
        return jsonl.lines(result)  # written line by line
    renderers = {SweepFormat.junit: junit, SweepFormat.prom: prom}
    return renderers[fmt].render(result)


def _sweep_table(result: sweeping.SweepResult) -> None:
    t = Table(title=f"sweep of {len(result.records)} agencies")
    for column in ("agency", "active", "cert days", "score", "reasons"):
        t.add_column(column, overflow="fold")
    for record in result.records:
        active = Text("yes", style="green") if record["active"] else Text("no", style="bold red")
        days = record["cert"]["days_left"]
        score = record["publication"]
        t.add_row(cell(record["agency"] or record["url"]), active,
                  "" if days is None else str(days), f"{score['score']:g} ({score['band']})",
                  cell("; ".join(record["reasons"])))
    console.print(t)


@app.command("sweep")
@handles_errors
def sweep(ctx: typer.Context,
          concurrency: int = typer.Option(32, "--concurrency", "-c", min=1, max=2048,
                                          help="Sites verified at the same time."),
          per_address: int = typer.Option(8, "--per-address", min=1, max=1024,
                                          help="Connections at once to one server address."),
          workers: int = typer.Option(1, "--workers", min=1, max=64,
                                      help="Processes verifying in parallel (one event loop "
                                           "each; limits are shared among them)."),
          fmt: SweepFormat = typer.Option(SweepFormat.table, "--format", "-f"),
          output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False,
                                                help="Write the report here (atomically) "
                                                     "instead of stdout."),
          lang: Lang = typer.Option(Lang.id, "--lang",
                                    help="Language of the HTML report and the alerts."),
          no_alerts: bool = typer.Option(False, "--no-alerts",
                                         help="Send no alerts; what changed is alerted at the "
                                              "next sweep that sends them."),
          ca: list[Path] = CA_OPTION, timeout: float = TIMEOUT_OPTION,
          deadline: float = DEADLINE_OPTION) -> None:
    """Verify every agency site at once and report the regency's '% active' figure.

    Every agency that is not offboarded (hosted here or external) is verified; checks
    that could not run are retried once, inside the site's deadline (--deadline); a site
    never aborts the sweep. The sweep is stored in the state dir's history.sqlite. Formats: table, json, jsonl (one versioned record per agency, the
    source of truth), junit (CI), prom (Prometheus textfile), html (leadership report,
    Bahasa Indonesia or --lang en). Exit 1 when any agency is not active (for alerting).

    Then the alerts configured in group_vars/all.yml (alerts:) get one message per
    channel with what changed since the last sweep; a channel that fails is named in
    the output and gets the same changes again at the next sweep (the exit code does
    not change).
    """
    if fmt is SweepFormat.table and output:
        raise UsageError("--output needs a report format", hint="add --format jsonl, json, "
                                                                "junit, prom or html")
    from ..verify.history import record_sweep
    from ..verify.report import write_atomic

    inv = ctx.obj.inventory(placement_only=True)  # what the sweep needs: a lighter load
    result = _sweep_with_progress(inv, concurrency=concurrency, per_address=per_address,
                                  timeout=timeout, extra_roots=tuple(ca), workers=workers,
                                  deadline=deadline)
    record_sweep(inv.state_dir, result)
    if fmt is SweepFormat.table:
        _sweep_table(result)
        console.print(result.summary.line(), markup=False)
    else:
        text = _render_sweep(result, fmt, inv, lang)
        if output:
            write_atomic(output, text)
        elif isinstance(text, str):
            sys.stdout.write(text)
        else:
            sys.stdout.writelines(text)
        err_console.print(result.summary.line(), markup=False)
    if inv.settings.alerts and not no_alerts:
        say = console if fmt is SweepFormat.table else err_console
        for line in _send_alerts(inv, result, lang):
            say.print(line, markup=False)
    raise typer.Exit(0 if result.summary.active == result.summary.total else 1)


def _send_alerts(inv: Inventory, result: sweeping.SweepResult, lang: Lang) -> list[str]:
    """Alert on what changed; one line per channel that had something to send."""
    from ..verify import alerts

    try:
        run = alerts.alert_after_sweep(inv, result.records, result.summary.active,
                                       result.summary.total, lang.value)
    except ProvisionerError as exc:  # the alert state is unchanged: the next sweep retries
        return [f"alerts: not sent, tried again at the next sweep: {visible(exc)}"]
    if not run.outcomes:
        return ["alerts: no change since the last sweep"]
    return [f"alerts: {o.channel}: sent {o.changes} change(s)" if o.error is None else
            f"alerts: {o.channel}: NOT sent, {o.changes} change(s) kept for the next sweep: "
            f"{o.error}" for o in run.outcomes]


def _show_audit(state_dir: Path, agency: str | None, fmt: Format, limit: int) -> None:
    """The last ``limit`` audit entries (optionally of one agency), oldest first."""
    from ..safety.audit import AuditLog

    entries = AuditLog(state_dir).read(agency=agency)[-limit:]
    if fmt is Format.json:
        emit_json([e.to_dict() for e in entries])
        return
    if not entries:
        console.print("no changes recorded yet" + (f" for {agency}" if agency else ""))
        return
    table(["time", "operator", "command", "agency", "kind", "action", "change", "result"],
          [[e.time.isoformat(timespec="seconds"), e.operator, e.command, e.agency, e.kind, e.action,
            e.change if isinstance(e.change, str) else json.dumps(e.change, ensure_ascii=False),
            e.result + (f": {e.reason}" if e.reason else "")] for e in entries],
          title=f"audit log of {agency}" if agency else "audit log")


@app.command("history")
@handles_errors
def history(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format", "-f"),
            limit: int = typer.Option(30, "--limit", min=1,
                                      help="How many past sweeps (or audit entries)."),
            agency: Optional[str] = typer.Option(None, "--agency", metavar="SLUG",
                                                 help="One agency's verdicts instead."),
            audit: bool = typer.Option(False, "--audit",
                                       help="Show the audit log instead: who changed what, "
                                            "when, with which result.")) -> None:
    """Show the trend of the active share and publication score over past sweeps.

    With --audit: the audit log of every change mutating commands made (time in UTC,
    operator, command, agency, what changed, result), oldest first.
    """
    if audit:
        _show_audit(ctx.obj.resolved_state_dir, agency, fmt, limit)
        return
    from ..verify import history as history_store

    state_dir = ctx.obj.resolved_state_dir
    points = (history_store.agency_trend(state_dir, agency, limit) if agency
              else history_store.sweep_trend(state_dir, limit))
    if fmt is Format.json:
        emit_json([p.to_dict() for p in points])
        return
    if not points:
        console.print("no sweeps recorded yet: run 'provisioner sweep'")
        return
    columns = list(points[0].to_dict())[1:]
    table(columns, [list(p.to_dict().values())[1:] for p in points],
          title=f"history of {agency}" if agency else "sweep history")


def _show_steps_plan(steps: Plan, title: str) -> None:
    """One agency's plan: the agency column left out."""
    table(list(ROW_COLUMNS[1:]), [c.row()[1:] for c in steps], title=title)


def _show_run(result: StepsResult, title: str, rerun: str) -> None:
    table(["step", "status", "detail"], [[o.kind, o.status, o.detail] for o in result.outcomes],
          title=title)
    if result.failed:
        err_console.print(f"stopped; not done: {', '.join(result.not_run) or 'nothing'}. Fix "
                          f"the cause, then re-run '{rerun}': it resumes where it stopped",
                          markup=False)


def _confirm_or_stop(question: str) -> None:
    if not typer.confirm(question, default=False):
        err_console.print("aborted: nothing was changed")
        raise typer.Exit(1)


@app.command("offboard")
@handles_errors
def offboard(ctx: typer.Context,
             agency: str = typer.Argument(..., metavar="AGENCY", help="The agency's slug."),
             archive: Optional[Path] = typer.Option(None, "--archive", metavar="DIR",
                                                    file_okay=False,
                                                    help="Folder for the archive [default: "
                                                         "<state>/archives]."),
             yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
             dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop."),
             break_lock: bool = BREAK_LOCK_OPTION,
             fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Archive an agency's site, then remove its DNS records, vhost, files and certificate.

    Shows the plan first and asks before applying (unless --yes). Steps, in order, each
    only after the previous one succeeded: archive (the site folder and vhost in a
    tar.gz, 0600, with a .sha256 beside it and a manifest inside, read back and
    verified; an archive already holding everything is reused), dns (only records this
    inventory owns), vhost (nginx -t without it, one reload), site files, certificate
    (revoked at the CA when acme_revoke_on_offboard, then deleted; a shared wildcard
    certificate stays), registry (status: offboarded in agencies/<slug>.yml, comments
    kept). A run that fails or is killed is finished by running it again; content is
    never removed before it is archived. Bring a site back with 'provisioner restore'.
    """
    if fmt is Format.json and not (yes or dry_run):
        raise UsageError("--format json cannot ask for confirmation",
                         hint="add --yes or --dry-run")
    from ..lifecycle import offboard as offboarding

    inv = ctx.obj.inventory()
    [target] = inv.select([agency])
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else \
        (lambda _line: None)
    with offboarding.Offboarding(inv, report, command=None if dry_run else command_line(),
                                 break_lock=break_lock) as run:
        oplan = run.plan(target, offboarding.archive_dir_of(inv, archive))
        if table_output:
            _show_steps_plan(oplan.plan, f"offboarding plan for {target.slug} ({target.fqdn})")
        if dry_run or not oplan.has_changes:
            if table_output and not oplan.has_changes:
                console.print(f"nothing to do: {target.slug} is offboarded", markup=False)
            elif not table_output:
                emit_json({"plan": oplan.to_dict(), "result": None})
            return
        if not yes:
            _confirm_or_stop(f"Offboard {target.slug}? Its site goes offline (archived first).")
        result = run.apply(oplan)
    if table_output:
        _show_run(result, f"offboarding of {target.slug}", f"provisioner offboard {target.slug}")
        if result.archive:
            console.print(f"archive: {result.archive} (restore with 'provisioner restore "
                          f"{result.archive}')", markup=False)
    else:
        emit_json({"plan": oplan.to_dict(), "result": result.to_dict()})
    if result.failed:
        raise typer.Exit(1)


@app.command("restore")
@handles_errors
def restore(ctx: typer.Context,
            archive: Path = typer.Argument(..., metavar="ARCHIVE|AGENCY",
                                           help="The .tar.gz 'provisioner offboard' wrote "
                                                "(its .sha256 file beside it); with "
                                                "--from-backup, the agency's slug."),
            from_backup: Optional[str] = typer.Option(
                None, "--from-backup", metavar="latest|SNAPSHOT",
                help="Restore the agency's site from the backup repository: its latest "
                     "snapshot or the one with this id ('provisioner backup list AGENCY')."),
            yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop."),
            break_lock: bool = BREAK_LOCK_OPTION,
            fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Bring an offboarded site back from its archive, byte for byte, and onboard it again.

    The archive is checked against its .sha256 file and every file against the manifest
    (a mismatch is refused with exit 2, nothing changed). Then the files go back to the
    agency's host with their modes and times (a different file already there is never
    overwritten: the run stops before writing anything), the registry entry is set to
    'status: active', and onboarding runs for the agency: DNS record, vhost, a new
    certificate, verification. Exit 1 when a step failed; a re-run resumes.
    With --from-backup the site comes from a restic snapshot instead (checked the same
    way against the manifest stored with it).
    """
    if fmt is Format.json and not (yes or dry_run):
        raise UsageError("--format json cannot ask for confirmation",
                         hint="add --yes or --dry-run")
    from ..lifecycle import restore as restoring

    inv = ctx.obj.inventory()
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else \
        (lambda _line: None)
    with restoring.Restoring(inv, report, command=None if dry_run else command_line(),
                             break_lock=break_lock) as run:
        if from_backup is None:
            rplan = run.plan(archive)
        else:
            from ..lifecycle import backup

            report(f"fetching {archive.name} ({from_backup}) from the backup repository")
            rplan = run.plan_archived(backup.fetch_from_backup(inv, str(archive), from_backup))
        slug = rplan.agency.slug
        if table_output:
            _show_steps_plan(rplan.plan, f"restore of {slug} from {rplan.archive.path.name} "
                                         f"({rplan.archive.manifest['created_at']})")
        if dry_run:
            if not table_output:
                emit_json({"plan": rplan.to_dict(), "result": None})
            return
        if not yes:
            _confirm_or_stop(f"Restore {slug} and put its site online again?")
        result = run.apply(rplan, progress=_onboard_progress if table_output else None)
    if table_output:
        rerun = f"provisioner restore {archive}" + (f" --from-backup {from_backup}"
                                                     if from_backup else "")
        _show_run(result, f"restore of {slug}", rerun)
    else:
        emit_json({"plan": rplan.to_dict(), "result": result.to_dict()})
    if result.failed:
        raise typer.Exit(1)


@backup_app.callback(invoke_without_command=True)
@handles_errors
def backup_run(ctx: typer.Context,
               agencies: list[str] = typer.Option([], "--agency", "-a", metavar="AGENCY",
                                                  help="Back up this agency (repeatable)."),
               all_: bool = typer.Option(False, "--all", help="Every hosted agency."),
               dry_run: bool = typer.Option(False, "--dry-run",
                                            help="Fetch and stage, let restic say what it "
                                                 "would store; no snapshot, no retention."),
               break_lock: bool = BREAK_LOCK_OPTION,
               fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Back up agencies' sites and the toolkit's state into the restic repository.

    'provisioner backup --all' (or --agency SLUG ...): each site is fetched from its host
    (one SSH round trip; an unchanged site only has its hashes compared and gets no new
    snapshot) and stored as one snapshot tagged agency:<slug>; the inventory, audit log,
    history and ACME account key as one tagged state. The repository (created on first
    use), its password file and the retention are 'backup:' in group_vars/all.yml;
    retention (restic forget --prune) is applied after every backup. Exit 1 when a
    target failed. Subcommands: list, check, prune.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not (all_ or agencies):
        raise UsageError("name what to back up", hint="--all, or --agency SLUG (repeatable); "
                                                      "see also: backup list, check, prune")
    from ..lifecycle import backup

    inv = ctx.obj.inventory()
    targets = inv.select(agencies, all_=all_)
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else \
        (lambda _line: None)
    with backup.Backup(inv, report, command=None if dry_run else command_line(),
                       break_lock=break_lock) as run:
        result = run.run(targets, dry_run=dry_run)
    if table_output:
        table(["target", "status", "detail"], [[o.target, o.status, o.detail]
                                               for o in result.outcomes],
              title=f"backup to {result.repository}" + (" (dry run)" if dry_run else ""))
        if result.retention is not None:
            console.print(f"retention: {result.retention[0]} snapshot(s) kept, "
                          f"{result.retention[1]} forgotten and pruned", markup=False)
    else:
        emit_json(result.to_dict())
    if result.failed:
        raise typer.Exit(1)


@backup_app.command("list")
@handles_errors
def backup_list(ctx: typer.Context,
                agency: Optional[str] = typer.Argument(None, metavar="[AGENCY]",
                                                       help="Only this agency's snapshots."),
                fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """The repository's snapshots of this inventory (of one agency), oldest first."""
    from ..lifecycle import backup

    snapshots = backup.list_snapshots(ctx.obj.inventory(), agency)
    if fmt is Format.json:
        emit_json([s.to_dict() for s in snapshots])
        return
    if not snapshots:
        console.print("no snapshots yet: run 'provisioner backup --all'")
        return
    table(["id", "time", "tags", "path"],
          [[s.short_id, s.time[:19].replace("T", " "), ", ".join(s.tags), ", ".join(s.paths)]
           for s in snapshots], title="backup snapshots")


@backup_app.command("check")
@handles_errors
def backup_check(ctx: typer.Context) -> None:
    """Verify the repository's structure and integrity (restic check); exit 1 on errors."""
    from ..lifecycle import backup

    console.print(backup.check(ctx.obj.inventory()), markup=False)


@backup_app.command("prune")
@handles_errors
def backup_prune(ctx: typer.Context,
                 dry_run: bool = typer.Option(False, "--dry-run",
                                              help="Say what would be forgotten."),
                 fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Apply the retention of group_vars/all.yml (restic forget --prune) now."""
    from ..lifecycle import backup

    result = backup.prune(ctx.obj.inventory(), dry_run=dry_run)
    if fmt is Format.json:
        emit_json(result.to_dict())
    else:
        console.print(f"{result.kept} snapshot(s) kept, {result.removed} "
                      + ("would be forgotten" if dry_run else "forgotten and pruned"),
                      markup=False)


CERT_ACTIONS = {"create": "order", "update": "renew", "noop": "keep"}


@app.command("renew")
@handles_errors
def renew(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
          all_: bool = typer.Option(False, "--all", help="Every active agency hosted here."),
          days: int = typer.Option(RENEW_DAYS, "--days", min=0,
                                   help="Renew certificates that expire within this many days."),
          dry_run: bool = typer.Option(False, "--dry-run",
                                       help="Show what would be renewed and stop."),
          break_lock: bool = BREAK_LOCK_OPTION,
          fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Renew certificates that expire within N days, install them and verify the served serial.

    Reads the certificate each host really has (one SSH round trip per host) and
    renews those expiring within --days (or not covering the agency's name). Before
    any order, the name must resolve to its host at every authoritative server and a
    random file in the challenge webroot must be fetchable; new keys (ECDSA P-256)
    are installed 0600, each host is reloaded once (after nginx -t), and the served
    certificate's serial is compared with the new one. An agency without any
    certificate gets its first one when its vhost is deployed. Meant for a daily
    timer (contrib/systemd/): exit 1 when any agency failed, 0 otherwise.
    """
    from ..lifecycle import onboard as onboarding

    inv = ctx.obj.inventory()
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else \
        (lambda _line: None)
    with onboarding.Session(inv, report, command=command_line(),
                            break_lock=break_lock) as session:
        oplan = session.plan(_dns_selection(inv, agencies, all_), steps=("tls",),
                             renew_days=days)
        if table_output:
            later = _deferred(oplan)
            table(["agency", "certificate", "action", "reason"],
                  [[c.agency, c.name, "later" if c.agency in later else CERT_ACTIONS[c.action],
                    c.reason] for c in oplan.plan],
                  title=f"certificates (renewing within {days} days)")
            for host, error in oplan.host_errors.items():
                console.print(f"host {host} cannot be used: {error}", markup=False)
            _show_rate_limits(oplan)
        if dry_run:
            if not table_output:
                emit_json({"plan": oplan.to_dict(), "result": None})
            return
        result = session.apply(oplan, progress=_onboard_progress if table_output else None)
    if table_output:
        _show_onboard_result(result, inv, timings=False)
    else:
        emit_json({"plan": oplan.to_dict(), "result": result.to_dict()})
    if result.failed:
        raise typer.Exit(1)


@app.command("doctor")
@handles_errors
def doctor(ctx: typer.Context,
           fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Check that the inventory is ready to go live, changing nothing.

    Each web host: SSH with a known host key, sudo without a password, nginx's version
    and 'nginx -t', the TLS protocols and server_tokens of the main config's http level,
    ports 80 and 443 on the public address, free space under the web root, the clock.
    DNS: the TSIG key is accepted (a signed update whose prerequisite fails), a signed
    zone transfer, every nameserver authoritative with the same SOA serial, the
    parent's NS records, CAA. ACME: the directory answers, the account exists, staging
    or production. Every check says pass, warn, fail or skip, with a fix. Exit 1 when
    any check fails.
    """
    from .. import doctor as doctoring

    report = doctoring.run(ctx.obj.inventory())
    if fmt is Format.json:
        emit_json(report.to_dict())
    else:
        table(["check", "target", "status", "detail", "fix"],
              [[c.id, c.target, c.status, c.detail, c.hint] for c in report.checks],
              title="doctor")
        console.print(", ".join(f"{n} {status}" for status, n in report.counts().items()),
                      markup=False)
    if report.failed:
        raise typer.Exit(1)


@app.command("certs")
@handles_errors
def certs(ctx: typer.Context,
          live: bool = typer.Option(False, "--live",
                                    help="Read the certificates on the hosts (one SSH round "
                                         "trip per host) instead of the controller's records."),
          days: int = typer.Option(RENEW_DAYS, "--days", min=0,
                                   help="Mark certificates that expire within this many days."),
          fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """List every certificate with its expiry.

    By default from the controller's records (<state>/certs/*.json, written at each
    issue: names, serial, expiry, hosts; never key material). --live reads what each
    host really serves from disk. Status: ok, renew due (within --days), missing,
    error (host unreadable: exit 1).
    """
    from ..tls.listing import listing_status, live_certs, recorded_certs

    inv = ctx.obj.inventory()
    now = datetime.datetime.now(datetime.timezone.utc)
    listings = (live_certs(inv, inv.select([], all_=True), now, days) if live
                else recorded_certs(inv.state_dir, now, days))
    if fmt is Format.json:
        emit_json([listing.to_dict(now) for listing in listings])
    elif not listings:
        console.print("no certificates recorded yet: run 'provisioner onboard' "
                      "(or 'provisioner certs --live' to read the hosts)")
    else:
        rows = [listing.to_dict(now) for listing in listings]
        table(["certificate", "names", "host", "serial", "expires", "days left", "status"],
              [[r["key"], ", ".join(r["names"]), r["host"], r["serial"] or "-",
                r["not_after"][:10] if r["not_after"] else "-",
                f"{r['days_left']:.0f}" if r["days_left"] is not None else "-",
                r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"]
               for r in rows],
              title=f"{len(rows)} certificates ({'on the hosts' if live else 'issued'})")
    if any(listing_status(listing) == "error" for listing in listings):
        raise typer.Exit(1)


@app.command("demo")
@handles_errors
def demo(ctx: typer.Context,
         down: bool = typer.Option(False, "--down", help="Stop the lab instead."),
         output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False,
                                               help="Where to write the HTML report "
                                                    "[default: <state>/demo/laporan.html]."),
         lang: Lang = typer.Option(Lang.id, "--lang", help="Language of the HTML report."),
         fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """The whole job on the built-in lab: lab up, onboard every sample agency, sweep,
    write the HTML report. Running it again changes nothing and is fast."""
    from ..lab import demo as demo_run  # the lab's dependencies are only needed here

    if down:
        report = _lab(ctx).down()
        console.print(f"lab down: {len(report.servers)} server(s) stopped, loopback addresses "
                      f"removed: {', '.join(report.addresses_removed) or 'none'}", markup=False)
        return
    inv = ctx.obj.inventory()
    say = (lambda line: err_console.print(line, markup=False)) if fmt is Format.table \
        else (lambda _line: None)
    result = demo_run.run_demo(inv, output, say, lang.value, command=command_line())
    summary = result.onboarding.by_agency()
    counts = {s: sum(o.status == s for o in summary.values()) for s in ("changed", "ok", "failed")}
    if fmt is Format.json:
        emit_json({"onboarded": len(summary), "onboard": counts,
                   "onboard_seconds": round(result.onboard_seconds, 2),
                   "sweep": result.sweep.summary.to_dict(), "report": str(result.report_path),
                   "example_url": result.example_url, "example_curl": result.example_curl,
                   "failed": [o.to_dict() for o in summary.values() if o.status == "failed"]})
    else:
        for outcome in (o for o in summary.values() if o.status == "failed"):
            err_console.print(f"failed: {outcome.agency} ({outcome.kind}): "
                              f"{visible(outcome.detail)}",
                              markup=False)
        console.print(f"onboarded {len(summary)} agencies in {result.onboard_seconds:.1f} s: "
                      f"{counts['changed']} changed, {counts['ok']} already up to date, "
                      f"{counts['failed']} failed", markup=False)
        console.print(result.sweep.summary.line(), markup=False)
        console.print(f"report: {result.report_path}", markup=False)
        console.print(f"try one site: {result.example_url}\n  {result.example_curl}",
                      markup=False)
    if counts["failed"]:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- report, alerts, timers

@app.command("report")
@handles_errors
def report(ctx: typer.Context,
           mail: bool = typer.Option(False, "--mail",
                                     help="Mail it to leadership (alerts.email.report_to)."),
           output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False,
                                                 help="Write it here (atomically)."),
           days: int = typer.Option(7, "--days", min=1, max=366,
                                    help="Days of trend in the chart."),
           lang: Lang = typer.Option(Lang.id, "--lang", help="Language of the report.")) -> None:
    """The leadership report of the last sweep, with the past week's trend.

    The same HTML report 'sweep --format html' writes, rebuilt from history.sqlite (no
    site is contacted). Written to stdout, to --output, or mailed with --mail to the
    addresses in alerts.email.report_to (group_vars/all.yml), as the mail's HTML body
    and as an attachment. Exit 1 when no sweep is recorded or the mail is refused.
    """
    from ..errors import Problem
    from ..verify import alerts
    from ..verify import history as history_store
    from ..verify.content import load_rules
    from ..verify.report import html as report_html
    from ..verify.report import write_atomic

    inv = ctx.obj.inventory()
    email = inv.settings.alerts.email if inv.settings.alerts else None
    if mail and not (email and email.report_to):
        raise InputError([Problem(inv.root / "group_vars" / "all.yml", None,
                                  "alerts.email.report_to", "no address to mail the report to",
                                  "add the leadership's addresses (README: Alerts)")])
    latest = history_store.latest_sweep(inv.state_dir)
    if latest is None:
        raise ProvisionerError("no sweep recorded yet", hint="run 'provisioner sweep' first")
    trend = history_store.sweep_trend_since(inv.state_dir,
                                            latest.started_at - datetime.timedelta(days=days))
    page = report_html.render(latest, trend, load_rules(), inv.settings.zone, lang.value)
    if output:
        write_atomic(output, page)
    if mail:
        date = latest.started_at.astimezone().strftime("%d-%m-%Y")
        s = latest.summary
        subject, text = alerts.render_report_mail(inv.settings.zone, date, s.active, s.total,
                                                  s.active_pct, lang.value)
        alerts.EmailChannel(email).send_report(
            subject, text, page, f"laporan-{latest.started_at:%Y-%m-%d}.html")
        err_console.print(f"mailed the report of the sweep of {date} ({len(trend)} sweeps of "
                          f"trend) to {', '.join(email.report_to)}", markup=False)
    elif not output:
        sys.stdout.write(page)


def _configured_alerts(inv: Inventory) -> None:
    if inv.settings.alerts is None:
        raise UsageError("no alerts configured",
                         hint=f"add an alerts: block to {inv.root / 'group_vars' / 'all.yml'} "
                              "(README: Alerts)")


@alerts_app.command("test")
@handles_errors
def alerts_test(ctx: typer.Context,
                lang: Lang = typer.Option(Lang.id, "--lang", help="Language of the message."),
                fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Send a test message through every configured channel (no state is changed).

    Exit 1 when any channel could not deliver.
    """
    from ..verify import alerts

    inv = ctx.obj.inventory()
    _configured_alerts(inv)
    outcomes = alerts.send_test(inv, lang.value)
    if fmt is Format.json:
        emit_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            console.print(f"{o.channel}: " + ("delivered" if o.error is None
                                              else f"FAILED: {o.error}"), markup=False)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


@alerts_app.command("status")
@handles_errors
def alerts_status(ctx: typer.Context,
                  fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """The configured channels and the changes waiting for each (after a failed delivery)."""
    from ..verify import alerts
    from ..verify import history as history_store

    inv = ctx.obj.inventory()
    _configured_alerts(inv)
    channels = [c.name for c in alerts.channels_of(inv.settings.alerts, inv.settings.zone)]
    queues = {q.channel: q for q in history_store.alert_queues(inv.state_dir)}
    if fmt is Format.json:
        emit_json({"channels": channels, "waiting": [q.to_dict() for q in queues.values()]})
        return
    table(["channel", "waiting", "since", "attempts", "last error"],
          [[name, queues[name].waiting, queues[name].oldest, queues[name].attempts,
            queues[name].last_error] if name in queues else [name, 0, "", "", ""]
           for name in channels], title="alert channels")


SYSTEMD_DIR_OPTION = typer.Option(Path("/etc/systemd/system"), "--systemd-dir", file_okay=False,
                                  envvar="PROVISIONER_SYSTEMD_DIR",
                                  help="Where the unit files go; systemctl is run only for "
                                       "/etc/systemd/system on a machine running systemd.")


def _timer_units(ctx: typer.Context, *, every: bool = False) -> dict[str, str]:
    """The units for this inventory: the weekly report's only when it has someone to go
    to (alerts.email.report_to), the daily backup's only with a backup: block, unless
    ``every``."""
    from ..lifecycle import timers

    inv = ctx.obj.inventory()
    email = inv.settings.alerts.email if inv.settings.alerts else None
    return timers.render_units(timers.this_installation(inv.root, inv.state_dir),
                               report=every or bool(email and email.report_to),
                               backup=every or inv.settings.backup is not None)


def _show_units(result: Any, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({"units": [dataclasses.asdict(u) for u in result.units],
                   "changed": list(result.changed), "systemctl": list(result.systemctl),
                   "ran_systemctl": result.ran_systemctl})
        return
    table(["unit", "file", "enabled", "active"],
          [[u.name, u.file, u.enabled or "-", u.active or "-"] for u in result.units],
          title=f"systemd units in {result.units[0].path.parent}")


def _systemctl_note(result: Any) -> None:
    from ..lifecycle import timers

    if result.ran_systemctl:
        console.print("ran: " + "; ".join(result.systemctl), markup=False)
        return
    why = ("systemctl acts only on /etc/systemd/system" if timers.systemd_running()
           else "systemd is not running on this machine")
    console.print(f"{why}: nothing was enabled or stopped. Where it runs: "
                  + " && ".join(result.systemctl), markup=False)


@timers_app.command("install")
@handles_errors
def timers_install(ctx: typer.Context, systemd_dir: Path = SYSTEMD_DIR_OPTION,
                   dry_run: bool = typer.Option(False, "--dry-run",
                                                help="Print the unit files and stop."),
                   fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Install the timers with this inventory, state dir and provisioner command filled in.

    Writes provisioner-{sweep,report,renew}.{service,timer} (0644; a file of the same
    name not written by provisioner is refused), then, where systemd is running,
    'systemctl daemon-reload' and 'systemctl enable --now' of the three timers.
    Running it again rewrites only what changed.
    """
    from ..lifecycle import timers

    units = _timer_units(ctx)
    if dry_run:
        if fmt is Format.json:
            emit_json({str(systemd_dir / name): text for name, text in units.items()})
            return
        for name, text in units.items():
            console.print(f"# {systemd_dir / name}\n{text}", markup=False)
        return
    result = timers.install(units, systemd_dir)
    if fmt is Format.table:
        for name in result.changed:
            console.print(f"wrote {systemd_dir / name}", markup=False)
        if not result.changed:
            console.print("unit files already up to date", markup=False)
        if not any(name.startswith(timers.REPORT_UNIT) for name in units):
            console.print("left out the weekly report (provisioner-report.*): no "
                          "alerts.email.report_to in group_vars/all.yml", markup=False)
        if not any(name.startswith(timers.BACKUP_UNIT) for name in units):
            console.print("left out the daily backup (provisioner-backup.*): no backup: "
                          "in group_vars/all.yml", markup=False)
        _systemctl_note(result)
    _show_units(result, fmt)


@timers_app.command("remove")
@handles_errors
def timers_remove(ctx: typer.Context, systemd_dir: Path = SYSTEMD_DIR_OPTION,
                  dry_run: bool = typer.Option(False, "--dry-run",
                                               help="Show what would be removed and stop."),
                  fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Stop and disable the timers, then delete the unit files 'timers install' wrote."""
    from ..lifecycle import timers

    units = _timer_units(ctx, every=True)
    if dry_run:
        names = timers.removable(units, systemd_dir)
        if fmt is Format.json:
            emit_json({"would_remove": [str(systemd_dir / n) for n in names]})
        else:
            for name in names:
                console.print(f"would remove {systemd_dir / name}", markup=False)
            if not names:
                console.print("nothing to remove", markup=False)
        return
    result = timers.remove(units, systemd_dir)
    if fmt is Format.table:
        for name in result.changed:
            console.print(f"removed {systemd_dir / name}", markup=False)
        _systemctl_note(result)
    _show_units(result, fmt)


@timers_app.command("status")
@handles_errors
def timers_status(ctx: typer.Context, systemd_dir: Path = SYSTEMD_DIR_OPTION,
                  fmt: Format = typer.Option(Format.table, "--format", "-f")) -> None:
    """Each unit file (installed as it would be written now, differs, missing, foreign)
    and, where systemd is running, whether each timer is enabled and active.

    Exit 1 when any unit file is not installed as it would be written now.
    """
    from ..lifecycle import timers

    result = timers.status(_timer_units(ctx), systemd_dir)
    _show_units(result, fmt)
    if fmt is Format.table and not result.ran_systemctl:
        console.print("timer states unknown: " + (
            "systemctl acts only on /etc/systemd/system" if timers.systemd_running()
            else "systemd is not running on this machine"), markup=False)
    if any(u.file != "installed" for u in result.units):
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="provisioner")


if __name__ == "__main__":
    sys.exit(main())
