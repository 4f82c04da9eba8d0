"""Validate, list, export and import the agency registry; create a fresh inventory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from .common import handles_errors
from .options import FORMAT_OPTION, Format, dry_run_option
from .output import console, emit_json, err_console, table, visible

registry_app = typer.Typer(help="Validate, list and import the agency registry.",
                           no_args_is_help=True)


@registry_app.command("check")
@handles_errors
def registry_check(ctx: typer.Context,
                   fmt: Format = FORMAT_OPTION) -> None:
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
                  fmt: Format = FORMAT_OPTION) -> None:
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
                    fmt: Format = FORMAT_OPTION) -> None:
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
                    dry_run: bool = dry_run_option("Validate and show what would be written."),
                    fmt: Format = FORMAT_OPTION) -> None:
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


@handles_errors
def init(directory: Path = typer.Argument(..., metavar="DIR"),
         zone: str = typer.Option(..., "--zone", help="The regency's zone, e.g. paserkab.go.id.")) -> None:
    """Create a fresh inventory for another regency, with commented examples."""
    from ..registry import init as scaffold

    for path in scaffold.create_inventory(directory, zone):
        console.print(f"wrote {path}")
    console.print(f"next: create the TSIG key file named in {directory}/group_vars/all.yml, "
                  f"edit the files, then run 'provisioner --inventory {directory} registry check'")
