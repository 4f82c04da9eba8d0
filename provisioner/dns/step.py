"""The DNS step of onboarding and offboarding: preflight, plan, safety gate, apply, propagate.

``plan_dns`` reads the zone (one AXFR from the primary) and computes the plan;
``apply_dns`` sends that plan as one signed update, then waits until every
authoritative server serves it. ``dns_step`` does both in one call, for flows that
need no confirmation in between. All return data; the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import SafetyError, UsageError
from ..plan import Outcome, Plan, any_failed
from ..registry.models import Agency, Inventory
from . import plan as dnsplan
from .client import DEFAULT_PROPAGATION_TIMEOUT, DnsClient, PropagationReport, PropagationTimeout


@dataclass(frozen=True)
class DnsPlan:
    zone: str
    serial: int  # the zone serial the plan was computed from
    owned_records: int  # managed records this inventory owns in the zone
    safety: str | None  # why the safety gate would refuse the plan (None: it passes)
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "serial": self.serial, "owned_records": self.owned_records,
                "safety": self.safety, **self.plan.to_dict()}


@dataclass(frozen=True)
class DnsResult:
    plan: DnsPlan
    applied: bool  # an update was sent and accepted
    outcomes: tuple[Outcome, ...]
    update_messages: int
    serial: int | None = None  # the zone serial after the update
    propagation: PropagationReport | None = None

    @property
    def failed(self) -> bool:
        return any_failed(self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "failed": self.failed,
                "update_messages": self.update_messages, "serial": self.serial,
                "outcomes": [o.to_dict() for o in self.outcomes],
                "propagation": self.propagation.to_dict() if self.propagation else None}


def plan_dns(inventory: Inventory, agencies: Sequence[Agency] | None, *, force: bool = False,
             remove: bool = False, preflight: bool = False,
             client: DnsClient | None = None) -> DnsPlan:
    """The DNS plan for ``agencies`` (None: every agency, plus names we own that none claims).

    ``remove`` plans the deletion of the agencies' owned records (offboarding);
    ``preflight`` first checks that the key may update the zone (before an apply).
    """
    if remove and agencies is None:
        raise UsageError("removing DNS records needs the agencies named explicitly")
    client = client or DnsClient(inventory.settings)
    settings = inventory.settings
    if preflight:
        client.check_update_access()
    state = client.transfer()
    selected = list(inventory.agencies.values()) if agencies is None else list(agencies)
    desired = [dnsplan.removal_of(a) if remove else
               dnsplan.desired_for(a, inventory.hosts, settings) for a in selected]
    scope = None if agencies is None else {a.slug for a in selected}
    desired += dnsplan.orphaned_names(state, settings.inventory_id,
                                      [d.fqdn for d in desired], scope)
    plan = dnsplan.plan_changes(desired, state, settings.inventory_id, settings.record_ttl,
                                force=force)
    owned = dnsplan.owned_record_count(state, settings.inventory_id)
    return DnsPlan(state.zone, state.serial, owned,
                   dnsplan.safety_problem(plan, owned, settings.max_change_ratio), plan)


def apply_dns(inventory: Inventory, dns_plan: DnsPlan, *, force: bool = False,
              client: DnsClient | None = None,
              propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT) -> DnsResult:
    """Send the plan as one update (all or nothing), then wait for every nameserver.

    Raises SafetyError (gate, unless ``force``) or DNSError (update refused or
    prerequisites failed: nothing changed). Agencies in conflict are left out and
    reported failed; a propagation timeout marks the changed agencies failed.
    """
    if dns_plan.safety and not force:
        raise SafetyError(f"refused: {dns_plan.safety}",
                          hint="check the inventory; re-run with --force if this is intended")
    client = client or DnsClient(inventory.settings)
    sent_before = client.sent["update"]
    plan = dns_plan.plan.of_kind(dnsplan.KIND)
    applicable = dnsplan.applicable_agencies(plan)
    batch = dnsplan.update_batch(dns_plan.zone, plan)
    serial, report, lag = None, None, ""
    if batch.operations:
        client.update(batch)
        serial = client.soa_serial()
        try:
            report = client.wait_for_propagation(dnsplan.expectations(batch), serial,
                                                 timeout=propagation_timeout)
        except PropagationTimeout as exc:
            report, lag = exc.report, str(exc)
    outcomes = tuple(_outcome(plan.for_agency(slug), slug in applicable, lag)
                     for slug in plan.agencies())
    return DnsResult(dns_plan, bool(batch.operations), outcomes,
                     client.sent["update"] - sent_before, serial, report)


def _outcome(agency_plan: Plan, applied: bool, lag: str) -> Outcome:
    slug = agency_plan.changes[0].agency
    if agency_plan.has_conflicts:
        reason = next(c.reason for c in agency_plan if c.action == "conflict")
        return Outcome(slug, dnsplan.KIND, "failed", f"conflict: {reason}")
    if not applied:
        return Outcome(slug, dnsplan.KIND, "ok", "records up to date")
    counts = agency_plan.counts()
    done = ", ".join(f"{counts[a]} {a}" for a in ("create", "update", "delete") if counts[a])
    if lag:
        return Outcome(slug, dnsplan.KIND, "failed", f"{done} applied, but {lag}")
    return Outcome(slug, dnsplan.KIND, "changed", f"{done}; served by every nameserver")


def dns_step(inventory: Inventory, agencies: Sequence[Agency] | None, *, force: bool = False,
             dry_run: bool = False, remove: bool = False,
             client: DnsClient | None = None) -> DnsResult:
    """Preflight, plan and (unless ``dry_run``) apply the agencies' DNS records.

    ``remove`` deletes the records the toolkit owns for the agencies (offboarding);
    records it does not own are never touched.
    """
    client = client or DnsClient(inventory.settings)
    dns_plan = plan_dns(inventory, agencies, force=force, remove=remove, preflight=True,
                        client=client)
    if dry_run:
        return DnsResult(dns_plan, False, (), 0)
    return apply_dns(inventory, dns_plan, force=force, client=client)
