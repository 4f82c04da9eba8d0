"""Back up sites and state to the restic repository; list, check and prune it."""

from __future__ import annotations

from typing import Any, Optional

import typer

from ..errors import UsageError
from .common import command_line, handles_errors, progress_printer, show_records
from .options import BREAK_LOCK_OPTION, FORMAT_OPTION, Format, dry_run_option
from .output import console, emit_json, table

backup_app = typer.Typer()  # its help: backup_run's docstring


@backup_app.callback(invoke_without_command=True)
@handles_errors
def backup_run(ctx: typer.Context,
               agencies: list[str] = typer.Option([], "--agency", "-a", metavar="AGENCY",
                                                  help="Back up this agency (repeatable)."),
               all_: bool = typer.Option(False, "--all", help="Every hosted agency."),
               dry_run: bool = dry_run_option("Fetch and stage, let restic say what it "
                                              "would store; no snapshot, no retention."),
               break_lock: bool = BREAK_LOCK_OPTION,
               fmt: Format = FORMAT_OPTION) -> None:
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
    with backup.Backup(inv, progress_printer(fmt), command=None if dry_run else command_line(),
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
                fmt: Format = FORMAT_OPTION) -> None:
    """The repository's snapshots of this inventory (of one agency), oldest first."""
    from ..lifecycle import backup

    show_records(backup.list_snapshots(ctx.obj.inventory(), agency), fmt,
                 none_yet="no snapshots yet: run 'provisioner backup --all'",
                 show=_snapshots_table)


def _snapshots_table(snapshots: list[Any]) -> None:
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
                 dry_run: bool = dry_run_option("Say what would be forgotten."),
                 fmt: Format = FORMAT_OPTION) -> None:
    """Apply the retention of group_vars/all.yml (restic forget --prune) now."""
    from ..lifecycle import backup

    result = backup.prune(ctx.obj.inventory(), dry_run=dry_run)
    if fmt is Format.json:
        emit_json(result.to_dict())
    else:
        console.print(f"{result.kept} snapshot(s) kept, {result.removed} "
                      + ("would be forgotten" if dry_run else "forgotten and pruned"),
                      markup=False)
