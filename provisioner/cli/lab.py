"""The local lab (up, down, status, reset) and the demo that runs the whole job on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from .common import command_line, handles_errors, progress_printer
from .onboard import agency_counts
from .options import FORMAT_OPTION, Format, Lang
from .output import console, emit_json, err_console, table, visible

lab_app = typer.Typer(help="Start, stop and inspect the local lab (real BIND, nginx, "
                           "OpenSSH and Pebble on loopback addresses).", no_args_is_help=True)


def _lab(ctx: typer.Context):
    from ..lab.control import Lab  # imported here: the lab's dependencies are not needed elsewhere

    return Lab(ctx.obj.inventory())


def _show_servers(report: Any, fmt: Format, title: str, notes: list[str]) -> None:
    """What lab up or down did to each server, then the ``notes`` that are not empty
    (JSON: the whole report)."""
    if fmt is Format.json:
        emit_json(dataclasses.asdict(report))
        return
    table(["server", "role", "address", "pid", "result"],
          [[s.name, s.role, s.address, s.pid, s.action] for s in report.servers], title=title)
    for note in filter(None, notes):
        console.print(note)


@lab_app.command("up")
@handles_errors
def lab_up(ctx: typer.Context, fmt: Format = FORMAT_OPTION) -> None:
    """Start the lab servers (idempotent: servers already up are left alone)."""
    report = _lab(ctx).up()
    _show_servers(report, fmt, f"lab up in {report.seconds:.2f} s ({report.lab_dir})",
                  ["added to lo: " + ", ".join(report.addresses_added)
                   if report.addresses_added else ""])


@lab_app.command("down")
@handles_errors
def lab_down(ctx: typer.Context, fmt: Format = FORMAT_OPTION) -> None:
    """Stop the servers the lab started and remove the loopback addresses it added."""
    report = _lab(ctx).down()
    _show_servers(report, fmt, f"lab down ({report.lab_dir})",
                  [f"closed {report.ssh_masters_closed} ssh control master(s)"
                   if report.ssh_masters_closed else "",
                   "removed from lo: " + ", ".join(report.addresses_removed)
                   if report.addresses_removed else ""])


@lab_app.command("status")
@handles_errors
def lab_status(ctx: typer.Context,
               fmt: Format = FORMAT_OPTION) -> None:
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
              fmt: Format = FORMAT_OPTION) -> None:
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


@handles_errors
def demo(ctx: typer.Context,
         down: bool = typer.Option(False, "--down", help="Stop the lab instead."),
         output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False,
                                               help="Where to write the HTML report "
                                                    "[default: <state>/demo/laporan.html]."),
         lang: Lang = typer.Option(Lang.id, "--lang", help="Language of the HTML report."),
         fmt: Format = FORMAT_OPTION) -> None:
    """The whole job on the built-in lab: lab up, onboard every sample agency, sweep,
    write the HTML report. Running it again changes nothing and is fast."""
    from ..lab import demo as demo_run  # the lab's dependencies are only needed here

    if down:
        report = _lab(ctx).down()
        console.print(f"lab down: {len(report.servers)} server(s) stopped, loopback addresses "
                      f"removed: {', '.join(report.addresses_removed) or 'none'}", markup=False)
        return
    inv = ctx.obj.inventory()
    result = demo_run.run_demo(inv, output, progress_printer(fmt), lang.value,
                               command=command_line())
    summary = result.onboarding.by_agency()
    counts = agency_counts(summary)
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
