"""Verify one site, or sweep every agency's (with the alerts after a sweep)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import ProvisionerError, UsageError
from ..registry.models import Inventory
from .common import Context, handles_errors
from .options import FORMAT_OPTION, Format, Lang
from .output import cell, console, emit_json, err_console, visible

if TYPE_CHECKING:
    from ..verify import sweep as sweeping
    from ..verify import verifier as verifying


class SweepFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    junit = "junit"
    prom = "prom"
    html = "html"


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


@handles_errors
def verify(ctx: typer.Context, target: str = typer.Argument(..., metavar="AGENCY|URL"),
           fmt: Format = FORMAT_OPTION,
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
