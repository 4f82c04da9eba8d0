"""Onboarding: plan and onboard; the views of an onboarding plan and result that renew
and the demo reuse."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import UsageError
from ..plan import ROW_COLUMNS, Plan
from ..registry.models import Agency, Inventory
from .common import PlannedChange, command_line, handles_errors
from .options import BREAK_LOCK_OPTION, DRY_RUN_OPTION, FORMAT_OPTION, YES_OPTION, Format
from .output import console, emit_json, table, visible

if TYPE_CHECKING:
    from ..dns import step as dnsops
    from ..lifecycle import onboard as onboarding


ALL_AGENCIES_HELP = ("Every agency in the inventory; records owned for offboarded or removed "
                     "agencies are planned for deletion.")


def dns_selection(inv: Inventory, slugs: list[str] | None, all_: bool) -> list[Agency] | None:
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
    show_host_errors(oplan)
    for slug, diff in oplan.drift.items():
        console.print(f"{slug}: drift: its vhost was changed by hand (onboarding restores it "
                      "and keeps the edited copy aside):", markup=False)
        for line in diff:
            console.print(f"  {visible(line)}", markup=False)
    for outcome in oplan.skipped:
        console.print(f"{outcome.agency}: {visible(outcome.detail)}", markup=False)
    show_rate_limits(oplan)


def show_host_errors(oplan: onboarding.OnboardPlan) -> None:
    for host, error in oplan.host_errors.items():
        console.print(f"host {host} cannot be used: {visible(error)}", markup=False)


def deferred_agencies(oplan: onboarding.OnboardPlan) -> set[str]:
    """Agencies whose certificate the CA's rate limits leave for a later run."""
    deferred = oplan.budget.deferred if oplan.budget else {}
    return {slug for t in oplan.targets if t.key in deferred for slug in t.agencies}


def show_rate_limits(oplan: onboarding.OnboardPlan) -> None:
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


def agency_counts(summary: dict[str, Any]) -> dict[str, int]:
    """How many agencies of a run's summary changed, were up to date (ok), failed."""
    return {s: sum(o.status == s for o in summary.values()) for s in ("changed", "ok", "failed")}


def show_onboard_result(result: onboarding.OnboardResult, inv: Inventory,
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
    counts = agency_counts(summary)
    console.print(f"{counts['changed']} changed, {counts['ok']} ok, {counts['failed']} failed; "
                  f"nginx reloads: {sum(result.reloads.values())}", markup=False)
    if timings:
        console.print("timings: " + ", ".join(f"{phase} {result.timings[phase]:.2f} s"
                                              for phase in PHASES
                                              if phase in result.timings), markup=False)


ONLY_HELP = "Run one step only: dns, web, tls or verify (to re-run it)."


@handles_errors
def plan(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
         all_: bool = typer.Option(False, "--all", help=ALL_AGENCIES_HELP),
         only: Optional[str] = typer.Option(None, "--only", help=ONLY_HELP),
         fmt: Format = FORMAT_OPTION) -> None:
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
        oplan = session.plan(dns_selection(inv, agencies, all_), steps=steps)
    if fmt is Format.json:
        emit_json(oplan.to_dict())
        return
    _show_onboard_plan(oplan)


@handles_errors
def onboard(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
            all_: bool = typer.Option(False, "--all", help=ALL_AGENCIES_HELP),
            dry_run: bool = DRY_RUN_OPTION,
            yes: bool = YES_OPTION,
            force: bool = typer.Option(False, "--force",
                                       help="Adopt unowned records and pass the safety gate."),
            only: Optional[str] = typer.Option(None, "--only", help=ONLY_HELP),
            timings: bool = typer.Option(False, "--timings",
                                         help="Print the time each phase took."),
            break_lock: bool = BREAK_LOCK_OPTION,
            fmt: Format = FORMAT_OPTION) -> None:
    """Give agencies their DNS record, vhost, starter site and certificate, then verify.

    Shows the plan first and asks before applying (unless --yes). Steps: dns (one
    signed update for the zone, then every nameserver is checked), web (one Ansible
    run: each host's files in one transfer, nginx -t before the swap, one reload per
    host), tls (ACME certificates after the pre-order checks, installed 0600, served
    serial compared), verify (as 'provisioner verify'). Re-running converges: a
    second run changes nothing and reloads nothing. Exit 1 when any agency failed;
    agencies that succeeded are kept.
    """
    change = PlannedChange(fmt, dry_run=dry_run, yes=yes)
    from ..lifecycle import onboard as onboarding

    inv = ctx.obj.inventory()
    steps = (only,) if only else onboarding.STEPS
    with onboarding.Session(inv, change.report, command=command_line(),
                            break_lock=break_lock) as session:
        oplan = session.plan(dns_selection(inv, agencies, all_), steps=steps, force=force)
        if not change.go_ahead(oplan, _show_onboard_plan,
                               question="Apply this plan?" if oplan.has_changes else None):
            return
        result = session.apply(oplan, force=force, progress=change.progress)
    change.finish(result, lambda r: show_onboard_result(r, inv, timings), plan_in_json=False)
