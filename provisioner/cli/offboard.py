"""Offboard an agency (archive first) and restore it from its archive or a backup."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..errors import UsageError
from ..plan import ROW_COLUMNS, Plan
from .common import BREAK_LOCK_OPTION, Format, command_line, handles_errors
from .onboard import onboard_progress
from .output import console, emit_json, err_console, table

if TYPE_CHECKING:
    from ..lifecycle import offboard as offboarding


def _show_steps_plan(steps: Plan, title: str) -> None:
    """One agency's plan: the agency column left out."""
    table(list(ROW_COLUMNS[1:]), [c.row()[1:] for c in steps], title=title)


def _show_run(result: offboarding.RunResult, title: str, rerun: str) -> None:
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
    from ..lifecycle import offboard as offboarding

    inv = ctx.obj.inventory()
    table_output = fmt is Format.table
    report = (lambda line: err_console.print(line, markup=False)) if table_output else \
        (lambda _line: None)
    with offboarding.Restoring(inv, report, command=None if dry_run else command_line(),
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
        result = run.apply(rplan, progress=onboard_progress if table_output else None)
    if table_output:
        rerun = f"provisioner restore {archive}" + (f" --from-backup {from_backup}"
                                                     if from_backup else "")
        _show_run(result, f"restore of {slug}", rerun)
    else:
        emit_json({"plan": rplan.to_dict(), "result": result.to_dict()})
    if result.failed:
        raise typer.Exit(1)
