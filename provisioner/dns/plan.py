"""DNS planning, pure: desired records, ownership, the plan, and the update it becomes.

Ownership: every name the toolkit manages carries a TXT record at
``_provisioner.<name>`` reading ``owner=<inventory_id>;agency=<slug>`` (a prefix name,
so the TXT never sits beside a CNAME). The planner changes or deletes only records at
names it owns; a name in use without our ownership record is a ``conflict`` that only
``--force`` adopts (the adoption writes the ownership record).

The update a plan becomes (``update_batch``) guards every change with RFC 2136
prerequisites built from what the plan saw, so a change someone makes between plan
and apply makes the whole update fail instead of being overwritten:

* every rrset the plan saw: it must still hold exactly those values;
* every rrset the plan saw absent at a name it changes: it must still be absent;
* a name the plan claims fresh (ownership created): the name and its ownership
  name must not exist.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping

from ..plan import Change, Plan
from ..registry.models import Agency, Host, Settings
from .answer import RRset
from .client import Expectation, Operation, Prerequisite, UpdateBatch, ZoneState

KIND = "dns"
MANAGED_TYPES = ("A", "AAAA", "CNAME")
OWNERSHIP_LABEL = "_provisioner"
MIN_EXISTING_RECORDS = 10  # below this many owned records the safety gate stays open (octoDNS)


# =========================================================================== names and values

def ownership_name(fqdn: str) -> str:
    return f"{OWNERSHIP_LABEL}.{_norm(fqdn)}"


def owned_name(txt_name: str) -> str | None:
    """The managed name an ownership TXT name stands for (None: not an ownership name)."""
    prefix = OWNERSHIP_LABEL + "."
    name = _norm(txt_name)
    return name[len(prefix):] if name.startswith(prefix) else None


def ownership_value(inventory_id: str, slug: str) -> str:
    return f'"owner={inventory_id};agency={slug}"'


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def canonical(rdtype: str, value: str) -> str:
    """Rdata text as the DNS client reports it, so desired and observed compare equal."""
    if rdtype in ("A", "AAAA"):
        return str(ipaddress.ip_address(value))
    if rdtype == "CNAME":
        return _norm(value) + "."
    return value


# =========================================================================== desired state

@dataclass(frozen=True)
class DesiredName:
    """The records one agency should have at its name (none: remove what we own there)."""

    agency: str
    fqdn: str
    rrsets: Mapping[str, RRset] = field(default_factory=dict)
    absent_reason: str = ""  # why nothing is wanted (offboarded, external, removed)


def desired_for(agency: Agency, hosts: Mapping[str, Host], settings: Settings) -> DesiredName:
    """A/AAAA to the host's public addresses, or a CNAME to the host's name."""
    fqdn = _norm(agency.fqdn)
    if agency.offboarded:
        return DesiredName(agency.slug, fqdn, {}, "agency is offboarded")
    if agency.host is None:
        return DesiredName(agency.slug, fqdn, {}, "hosted externally")
    host, ttl = hosts[agency.host], settings.record_ttl
    if agency.record_type == "CNAME":
        target = canonical("CNAME", host.fqdn)
        return DesiredName(agency.slug, fqdn, {"CNAME": RRset(ttl, (target,))})
    rrsets = {"A": RRset(ttl, (canonical("A", host.public_ipv4),))}
    if host.public_ipv6:
        rrsets["AAAA"] = RRset(ttl, (canonical("AAAA", host.public_ipv6),))
    return DesiredName(agency.slug, fqdn, rrsets)


def removal_of(agency: Agency) -> DesiredName:
    """Nothing wanted at the agency's name: its owned records are deleted (offboarding)."""
    return DesiredName(agency.slug, _norm(agency.fqdn), {}, "agency is being removed")


def orphaned_names(state: ZoneState, inventory_id: str, known_fqdns: Collection[str],
                   slugs: Collection[str] | None = None) -> list[DesiredName]:
    """Names we own in the zone that no planned agency claims (agency removed or renamed).

    ``slugs`` limits the search to names owned for those agencies (None: any agency).
    """
    known = {_norm(n) for n in known_fqdns}
    orphans = []
    for name in sorted(state.records):
        fqdn = owned_name(name)
        owner = _parse_owner(state.records[name].get("TXT"))
        if fqdn is None or fqdn in known or owner is None or owner[0] != inventory_id:
            continue
        if slugs is None or owner[1] in slugs:
            orphans.append(DesiredName(owner[1], fqdn, {},
                                       "name no longer in the inventory (agency removed "
                                       "or renamed)"))
    return orphans


# =========================================================================== ownership

@dataclass(frozen=True)
class Ownership:
    status: str  # "ours", "none" or "foreign"
    detail: str = ""


def _parse_owner(txt: RRset | None) -> tuple[str, str] | None:
    """(inventory_id, slug) from a single ownership TXT value, None when absent or unreadable."""
    if txt is None or len(txt.values) != 1:
        return None
    fields = dict(part.partition("=")[::2] for part in txt.values[0].strip('"').split(";"))
    if set(fields) != {"owner", "agency"}:
        return None
    return fields["owner"], fields["agency"]


def ownership_of(txt: RRset | None, inventory_id: str, slug: str) -> Ownership:
    if txt is None:
        return Ownership("none")
    owner = _parse_owner(txt)
    if owner is None:
        return Ownership("foreign", "its ownership record holds unexpected text")
    if owner[0] != inventory_id:
        return Ownership("foreign", f"owned by inventory {owner[0]!r}")
    if owner[1] != slug:
        return Ownership("foreign", f"owned by agency {owner[1]!r} of this inventory")
    return Ownership("ours")


# =========================================================================== the planner

def plan_changes(desired: Iterable[DesiredName], state: ZoneState, inventory_id: str,
                 ttl: int, *, force: bool = False) -> Plan:
    """Changes that bring each desired name to its desired records (no side effects).

    ``ttl`` is the TTL of the ownership TXT records.
    """
    changes: list[Change] = []
    for d in desired:
        changes += _plan_name(d, state, inventory_id, force, ttl)
    return Plan(tuple(changes))


def _plan_name(d: DesiredName, state: ZoneState, inventory_id: str, force: bool,
               ttl: int) -> list[Change]:
    observed = state.at(d.fqdn)
    managed = {t: observed[t] for t in MANAGED_TYPES if t in observed}
    other = sorted(t for t in observed if t not in MANAGED_TYPES)
    txt_name = ownership_name(d.fqdn)
    txt_old = state.at(txt_name).get("TXT")
    owner = ownership_of(txt_old, inventory_id, d.agency)
    txt_new = RRset(ttl, (ownership_value(inventory_id, d.agency),))

    if "CNAME" in d.rrsets and other:
        return _conflicts(d, managed, f"a CNAME cannot share the name with its "
                                      f"{', '.join(other)} records; remove them first")
    if owner.status == "ours":
        if not d.rrsets:
            return _diff(d, managed, {}, d.absent_reason) + \
                [_rrset_change(d.agency, txt_name, "TXT", txt_old, None, d.absent_reason)]
        return _diff(d, managed, d.rrsets, "") + \
            [_rrset_change(d.agency, txt_name, "TXT", txt_old, txt_new, "")]
    if not d.rrsets:
        left = "not ours: left alone" if (managed or other or txt_old) else "nothing to remove"
        return [Change(d.agency, KIND, "noop", d.fqdn, reason=f"{d.absent_reason}; {left}")]
    if owner.status == "none" and not managed and not other:
        return _diff(d, {}, d.rrsets, "new name") + \
            [_rrset_change(d.agency, txt_name, "TXT", None, txt_new, "claims the new name")]
    why = owner.detail or f"exists ({', '.join([*managed, *other])}) and is not owned by " \
                          f"provisioner"
    if not force:
        return _conflicts(d, managed, f"{why}; --force adopts it")
    adopted = f"adopt (--force): {why}"
    return _diff(d, managed, d.rrsets, adopted) + \
        [Change(d.agency, KIND, "update", txt_name, "TXT", txt_old.values if txt_old else (),
                txt_new.values, adopted, txt_new.ttl)]


def _diff(d: DesiredName, have: Mapping[str, RRset], want: Mapping[str, RRset],
          context: str) -> list[Change]:
    changes = []
    for rdtype in MANAGED_TYPES:
        change = _rrset_change(d.agency, d.fqdn, rdtype, have.get(rdtype), want.get(rdtype),
                               context or d.absent_reason)
        if change:
            changes.append(change)
    return changes


def _rrset_change(agency: str, name: str, rdtype: str, have: RRset | None,
                  want: RRset | None, context: str) -> Change | None:
    if have is None and want is None:
        return None
    if want is None:
        return Change(agency, KIND, "delete", name, rdtype, have.values, (),
                      context or f"{rdtype} no longer wanted", have.ttl)
    if have is None:
        return Change(agency, KIND, "create", name, rdtype, (), want.values,
                      context or "missing", want.ttl)
    if have == want:
        return Change(agency, KIND, "noop", name, rdtype, have.values, want.values,
                      context or "up to date", want.ttl)
    detail = "values differ" if have.values != want.values else f"TTL {have.ttl} -> {want.ttl}"
    return Change(agency, KIND, "update", name, rdtype, have.values, want.values,
                  f"{context}: {detail}" if context else detail, want.ttl)


def _conflicts(d: DesiredName, managed: Mapping[str, RRset], reason: str) -> list[Change]:
    rdtypes = [t for t in MANAGED_TYPES if t in managed or t in d.rrsets]
    return [Change(d.agency, KIND, "conflict", d.fqdn, t,
                   managed[t].values if t in managed else (),
                   d.rrsets[t].values if t in d.rrsets else (), reason)
            for t in rdtypes]


# =========================================================================== safety gate

def owned_record_count(state: ZoneState, inventory_id: str) -> int:
    """Managed rrsets at names whose ownership record names this inventory."""
    count = 0
    for name, rrsets in state.records.items():
        fqdn = owned_name(name)
        owner = _parse_owner(rrsets.get("TXT"))
        if fqdn is not None and owner is not None and owner[0] == inventory_id:
            count += sum(1 for t in MANAGED_TYPES if t in state.at(fqdn))
    return count


def safety_problem(plan: Plan, owned: int, max_ratio: float) -> str | None:
    """Why the gate refuses the plan (too many owned records touched), or None."""
    touched = sum(1 for c in plan.of_kind(KIND)
                  if c.action in ("update", "delete") and c.rdtype in MANAGED_TYPES)
    if owned < MIN_EXISTING_RECORDS or touched <= max_ratio * owned:
        return None
    return (f"the plan updates or deletes {touched} of {owned} owned records "
            f"({touched / owned:.0%}, above max_change_ratio {max_ratio:.0%})")


# =========================================================================== plan -> update

def applicable_agencies(plan: Plan) -> list[str]:
    """Agencies whose DNS changes go into the update: something to do and no conflict."""
    dns_plan = plan.of_kind(KIND)
    agency_plans = {slug: dns_plan.for_agency(slug) for slug in dns_plan.agencies()}
    return [slug for slug, p in agency_plans.items() if p.has_changes and not p.has_conflicts]


def update_batch(zone: str, plan: Plan) -> UpdateBatch:
    """One update for every applicable agency: prerequisites from what the plan saw."""
    prerequisites: list[Prerequisite] = []
    deletes: list[Operation] = []
    replaces: list[Operation] = []
    dns_plan = plan.of_kind(KIND)
    for slug in applicable_agencies(plan):
        changes = dns_plan.for_agency(slug).changes
        prerequisites += _prerequisites(changes)
        for c in changes:
            if c.action == "delete":
                deletes.append(Operation("delete", c.name, c.rdtype))
            elif c.action in ("create", "update"):
                replaces.append(Operation("replace", c.name, c.rdtype, c.ttl or 0, c.new))
    return UpdateBatch(zone, tuple(dict.fromkeys(prerequisites)), tuple(deletes + replaces))


def _prerequisites(changes: Iterable[Change]) -> list[Prerequisite]:
    changes = list(changes)
    fresh = set()
    for c in changes:
        if c.rdtype == "TXT" and c.action == "create" and owned_name(c.name):
            fresh |= {owned_name(c.name), c.name}
    found = [Prerequisite("name-absent", name) for name in sorted(fresh)]
    for c in changes:
        if c.name in fresh:
            continue
        found.append(Prerequisite("equals", c.name, c.rdtype, c.old) if c.old
                     else Prerequisite("rrset-absent", c.name, c.rdtype))
    seen = {(c.name, c.rdtype) for c in changes}
    for name in dict.fromkeys(c.name for c in changes if c.rdtype in MANAGED_TYPES):
        if name not in fresh:
            found += [Prerequisite("rrset-absent", name, t) for t in MANAGED_TYPES
                      if (name, t) not in seen]
    return found


def expectations(batch: UpdateBatch) -> list[Expectation]:
    """What every authoritative server must serve once the batch is applied."""
    return [Expectation(op.name, op.rdtype, op.values if op.action == "replace" else ())
            for op in batch.operations]
