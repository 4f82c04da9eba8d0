"""Offboard an agency (archive first) and restore it from its archive or a backup."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..plan import ROW_COLUMNS, Plan
from .common import PlannedChange, command_line, handles_errors
from .options import BREAK_LOCK_OPTION, DRY_RUN_OPTION, FORMAT_OPTION, YES_OPTION, Format
from .output import console, err_console, table

if TYPE_CHECKING:
    from ..lifecycle.run import StepsResult


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


def _show_offboarding(result: StepsResult, slug: str) -> None:
    _show_run(result, f"offboarding of {slug}", f"provisioner offboard {slug}")
    if result.archive:
        console.print(f"archive: {result.archive} (restore with 'provisioner restore "
                      f"{result.archive}')", markup=False)


@handles_errors
def offboard(ctx: typer.Context,
             agency: str = typer.Argument(..., metavar="AGENCY", help="The agency's slug."),
             archive: Optional[Path] = typer.Option(None, "--archive", metavar="DIR",
                                                    file_okay=False,
                                                    help="Folder for the archive [default: "
                                                         "<state>/archives]."),
             yes: bool = YES_OPTION, dry_run: bool = DRY_RUN_OPTION,
             break_lock: bool = BREAK_LOCK_OPTION,
             fmt: Format = FORMAT_OPTION) -> None:
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
    change = PlannedChange(fmt, dry_run=dry_run, yes=yes)
    from ..lifecycle import offboard as offboarding

    inv = ctx.obj.inventory()
    [target] = inv.select([agency])
    with offboarding.Offboarding(inv, change.report, command=None if dry_run else command_line(),
                                 break_lock=break_lock) as run:
        oplan = run.plan(target, offboarding.archive_dir_of(inv, archive))
        title = f"offboarding plan for {target.slug} ({target.fqdn})"
        if not change.go_ahead(
                oplan, lambda p: _show_steps_plan(p.plan, title),
                question=f"Offboard {target.slug}? Its site goes offline (archived first).",
                nothing_to_do=None if oplan.has_changes
                else f"nothing to do: {target.slug} is offboarded"):
            return
        result = run.apply(oplan)
    change.finish(result, lambda r: _show_offboarding(r, target.slug))


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
            yes: bool = YES_OPTION, dry_run: bool = DRY_RUN_OPTION,
            break_lock: bool = BREAK_LOCK_OPTION,
            fmt: Format = FORMAT_OPTION) -> None:
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
    change = PlannedChange(fmt, dry_run=dry_run, yes=yes)
    from ..lifecycle import restore as restoring

    inv = ctx.obj.inventory()
    with restoring.Restoring(inv, change.report, command=None if dry_run else command_line(),
                             break_lock=break_lock) as run:
        if from_backup is None:
            rplan = run.plan(archive)
        else:
            from ..lifecycle import backup

            change.report(f"fetching {archive.name} ({from_backup}) from the backup repository")
            rplan = run.plan_archived(backup.fetch_from_backup(inv, str(archive), from_backup))
        slug = rplan.agency.slug
        title = (f"restore of {slug} from {rplan.archive.path.name} "
                 f"({rplan.archive.manifest['created_at']})")
        if not change.go_ahead(rplan, lambda p: _show_steps_plan(p.plan, title),
                               question=f"Restore {slug} and put its site online again?"):
            return
        result = run.apply(rplan, progress=change.progress)
    rerun = f"provisioner restore {archive}" + (f" --from-backup {from_backup}"
                                                 if from_backup else "")
    change.finish(result, lambda r: _show_run(r, f"restore of {slug}", rerun))
