"""What the stored sweeps and the audit log say: the history trend, the audit log, the
leadership report.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import InputError, ProvisionerError
from .common import handles_errors, show_records
from .options import FORMAT_OPTION, Format, Lang
from .output import err_console, table


def _show_audit(state_dir: Path, agency: str | None, fmt: Format, limit: int) -> None:
    """The last ``limit`` audit entries (optionally of one agency), oldest first."""
    from ..safety.audit import AuditLog

    show_records(AuditLog(state_dir).read(agency=agency)[-limit:], fmt,
                 none_yet="no changes recorded yet" + (f" for {agency}" if agency else ""),
                 show=lambda entries: _audit_table(entries, agency))


def _audit_table(entries: list[Any], agency: str | None) -> None:
    table(["time", "operator", "command", "agency", "kind", "action", "change", "result"],
          [[e.time.isoformat(timespec="seconds"), e.operator, e.command, e.agency, e.kind, e.action,
            e.change if isinstance(e.change, str) else json.dumps(e.change, ensure_ascii=False),
            e.result + (f": {e.reason}" if e.reason else "")] for e in entries],
          title=f"audit log of {agency}" if agency else "audit log")


@handles_errors
def history(ctx: typer.Context, fmt: Format = FORMAT_OPTION,
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
    show_records(points, fmt, none_yet="no sweeps recorded yet: run 'provisioner sweep'",
                 show=lambda points: _trend_table(points, agency))


def _trend_table(points: list[Any], agency: str | None) -> None:
    columns = list(points[0].to_dict())[1:]
    table(columns, [list(p.to_dict().values())[1:] for p in points],
          title=f"history of {agency}" if agency else "sweep history")


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
