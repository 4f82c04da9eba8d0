"""The systemd timers: install, remove and inspect them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from .common import handles_errors
from .options import FORMAT_OPTION, Format, dry_run_option
from .output import console, emit_json, table

timers_app = typer.Typer(help="The systemd timers: hourly sweep with alerts, weekly report "
                              "to leadership, daily certificate renewal, daily backup.",
                         no_args_is_help=True)

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


def _why_no_systemctl() -> str:
    from ..lifecycle import timers

    return ("systemctl acts only on /etc/systemd/system" if timers.systemd_running()
            else "systemd is not running on this machine")


def _systemctl_note(result: Any) -> None:
    if result.ran_systemctl:
        console.print("ran: " + "; ".join(result.systemctl), markup=False)
        return
    console.print(f"{_why_no_systemctl()}: nothing was enabled or stopped. Where it runs: "
                  + " && ".join(result.systemctl), markup=False)


@timers_app.command("install")
@handles_errors
def timers_install(ctx: typer.Context, systemd_dir: Path = SYSTEMD_DIR_OPTION,
                   dry_run: bool = dry_run_option("Print the unit files and stop."),
                   fmt: Format = FORMAT_OPTION) -> None:
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
                  dry_run: bool = dry_run_option("Show what would be removed and stop."),
                  fmt: Format = FORMAT_OPTION) -> None:
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
                  fmt: Format = FORMAT_OPTION) -> None:
    """Each unit file (installed as it would be written now, differs, missing, foreign)
    and, where systemd is running, whether each timer is enabled and active.

    Exit 1 when any unit file is not installed as it would be written now.
    """
    from ..lifecycle import timers

    result = timers.status(_timer_units(ctx), systemd_dir)
    _show_units(result, fmt)
    if fmt is Format.table and not result.ran_systemctl:
        console.print(f"timer states unknown: {_why_no_systemctl()}", markup=False)
    if any(u.file != "installed" for u in result.units):
        raise typer.Exit(1)
