"""Certificates: renew those that expire soon, list them all with their expiry."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import typer

from ..registry.models import RENEW_DAYS
from .common import PlannedChange, command_line, handles_errors
from .onboard import (
    deferred_agencies,
    dns_selection,
    show_host_errors,
    show_onboard_result,
    show_rate_limits,
)
from .options import BREAK_LOCK_OPTION, FORMAT_OPTION, Format, dry_run_option
from .output import console, emit_json, table

if TYPE_CHECKING:
    from ..lifecycle import onboard as onboarding

CERT_ACTIONS = {"create": "order", "update": "renew", "noop": "keep"}


def _show_renewals(oplan: onboarding.OnboardPlan, days: int) -> None:
    later = deferred_agencies(oplan)
    table(["agency", "certificate", "action", "reason"],
          [[c.agency, c.name, "later" if c.agency in later else CERT_ACTIONS[c.action],
            c.reason] for c in oplan.plan],
          title=f"certificates (renewing within {days} days)")
    show_host_errors(oplan)
    show_rate_limits(oplan)


@handles_errors
def renew(ctx: typer.Context, agencies: list[str] = typer.Argument(None, metavar="[AGENCY]..."),
          all_: bool = typer.Option(False, "--all", help="Every active agency hosted here."),
          days: int = typer.Option(RENEW_DAYS, "--days", min=0,
                                   help="Renew certificates that expire within this many days."),
          dry_run: bool = dry_run_option("Show what would be renewed and stop."),
          break_lock: bool = BREAK_LOCK_OPTION,
          fmt: Format = FORMAT_OPTION) -> None:
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

    change = PlannedChange(fmt, dry_run=dry_run, yes=True)  # a timer's job: never asks
    inv = ctx.obj.inventory()
    with onboarding.Session(inv, change.report, command=command_line(),
                            break_lock=break_lock) as session:
        oplan = session.plan(dns_selection(inv, agencies, all_), steps=("tls",),
                             renew_days=days)
        if not change.go_ahead(oplan, lambda p: _show_renewals(p, days), question=None):
            return
        result = session.apply(oplan, progress=change.progress)
    change.finish(result, lambda r: show_onboard_result(r, inv, timings=False))


@handles_errors
def certs(ctx: typer.Context,
          live: bool = typer.Option(False, "--live",
                                    help="Read the certificates on the hosts (one SSH round "
                                         "trip per host) instead of the controller's records."),
          days: int = typer.Option(RENEW_DAYS, "--days", min=0,
                                   help="Mark certificates that expire within this many days."),
          fmt: Format = FORMAT_OPTION) -> None:
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
