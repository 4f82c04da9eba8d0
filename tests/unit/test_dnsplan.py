"""The DNS planner, table-driven: records observed at the primary in, changes out."""

from __future__ import annotations

import dataclasses

import dns.rdatatype
import pytest

from provisioner.dns import plan as dnsplan
from provisioner.dns.answer import RRset
from provisioner.dns.client import (
    Expectation,
    Operation,
    Prerequisite,
    ZoneState,
    update_message,
)
from provisioner.dns.plan import DesiredName
from provisioner.plan import Change, Outcome, Plan
from provisioner.registry.load import load_inventory

ZONE = "paserkab.go.id"
ID = "paserkab-dkisp"
NAME = f"dinkes.{ZONE}"
TXT_NAME = f"_provisioner.dinkes.{ZONE}"
OURS = '"owner=paserkab-dkisp;agency=dinkes"'
WEB1, WEB2 = "127.0.0.20", "127.0.0.21"
WEB1_FQDN = f"web1.{ZONE}."


def rr(*values: str, ttl: int = 300) -> RRset:
    return RRset(ttl, tuple(sorted(values)))


def zone(records: dict[str, dict[str, RRset]]) -> ZoneState:
    return ZoneState(ZONE, 7, records)


def want(**rrsets: RRset) -> DesiredName:
    return DesiredName("dinkes", NAME, rrsets)


def gone(reason: str = "agency is offboarded") -> DesiredName:
    return DesiredName("dinkes", NAME, {}, reason)


def owned(**rrsets: RRset) -> dict[str, dict[str, RRset]]:
    return {NAME: rrsets, TXT_NAME: {"TXT": rr(OURS)}}


def summary(plan: Plan) -> list[tuple]:
    return [(c.action, c.name, c.rdtype, c.old, c.new) for c in plan]


CASES = {
    "nothing exists: create the record and claim the name": (
        want(A=rr(WEB1)), {}, False,
        [("create", NAME, "A", (), (WEB1,)),
         ("create", TXT_NAME, "TXT", (), (OURS,))]),
    "same as desired: noop": (
        want(A=rr(WEB1)), owned(A=rr(WEB1)), False,
        [("noop", NAME, "A", (WEB1,), (WEB1,)),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "host changed: update with old and new": (
        want(A=rr(WEB2)), owned(A=rr(WEB1)), False,
        [("update", NAME, "A", (WEB1,), (WEB2,)),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "TTL changed: update": (
        want(A=rr(WEB1, ttl=600)), owned(A=rr(WEB1)), False,
        [("update", NAME, "A", (WEB1,), (WEB1,)),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "host gained IPv6: AAAA created": (
        want(A=rr(WEB1), AAAA=rr("2001:db8::20")), owned(A=rr(WEB1)), False,
        [("noop", NAME, "A", (WEB1,), (WEB1,)),
         ("create", NAME, "AAAA", (), ("2001:db8::20",)),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "unowned record exists: conflict, nothing else": (
        want(A=rr(WEB1)), {NAME: {"A": rr("10.9.9.9")}}, False,
        [("conflict", NAME, "A", ("10.9.9.9",), (WEB1,))]),
    "unowned name with other data only: conflict": (
        want(A=rr(WEB1)), {NAME: {"MX": rr(f"10 mail.{ZONE}.")}}, False,
        [("conflict", NAME, "A", (), (WEB1,))]),
    "owned by another inventory: conflict": (
        want(A=rr(WEB1)),
        {NAME: {"A": rr(WEB1)}, TXT_NAME: {"TXT": rr('"owner=other;agency=dinkes"')}}, False,
        [("conflict", NAME, "A", (WEB1,), (WEB1,))]),
    "owned for another agency of this inventory: conflict": (
        want(A=rr(WEB1)),
        {NAME: {"A": rr(WEB1)}, TXT_NAME: {"TXT": rr('"owner=paserkab-dkisp;agency=dinsos"')}},
        False,
        [("conflict", NAME, "A", (WEB1,), (WEB1,))]),
    "force on an unowned record: update and adopt": (
        want(A=rr(WEB1)), {NAME: {"A": rr("10.9.9.9")}}, True,
        [("update", NAME, "A", ("10.9.9.9",), (WEB1,)),
         ("update", TXT_NAME, "TXT", (), (OURS,))]),
    "force on an identical unowned record: adopt only": (
        want(A=rr(WEB1)), {NAME: {"A": rr(WEB1)}}, True,
        [("noop", NAME, "A", (WEB1,), (WEB1,)),
         ("update", TXT_NAME, "TXT", (), (OURS,))]),
    "force on another inventory's name: ownership rewritten": (
        want(A=rr(WEB1)),
        {NAME: {"A": rr(WEB2)}, TXT_NAME: {"TXT": rr('"owner=other;agency=x"')}}, True,
        [("update", NAME, "A", (WEB2,), (WEB1,)),
         ("update", TXT_NAME, "TXT", ('"owner=other;agency=x"',), (OURS,))]),
    "offboarded with owned records: delete them and the ownership": (
        gone(), owned(A=rr(WEB1), AAAA=rr("2001:db8::20")), False,
        [("delete", NAME, "A", (WEB1,), ()),
         ("delete", NAME, "AAAA", ("2001:db8::20",), ()),
         ("delete", TXT_NAME, "TXT", (OURS,), ())]),
    "offboarded, records not ours: left alone": (
        gone(), {NAME: {"A": rr(WEB1)}}, True,
        [("noop", NAME, "", (), ())]),
    "hosted externally, nothing there: noop": (
        gone("hosted externally"), {}, False,
        [("noop", NAME, "", (), ())]),
    "A to CNAME switch: delete A, create CNAME": (
        want(CNAME=rr(WEB1_FQDN)), owned(A=rr(WEB1)), False,
        [("delete", NAME, "A", (WEB1,), ()),
         ("create", NAME, "CNAME", (), (WEB1_FQDN,)),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "CNAME to A switch: delete CNAME, create A": (
        want(A=rr(WEB1)), owned(CNAME=rr(WEB1_FQDN)), False,
        [("create", NAME, "A", (), (WEB1,)),
         ("delete", NAME, "CNAME", (WEB1_FQDN,), ()),
         ("noop", TXT_NAME, "TXT", (OURS,), (OURS,))]),
    "CNAME beside other data: conflict even with force": (
        want(CNAME=rr(WEB1_FQDN)),
        {NAME: {"A": rr(WEB1), "TXT": rr('"v=spf1 -all"')}, TXT_NAME: {"TXT": rr(OURS)}}, True,
        [("conflict", NAME, "A", (WEB1,), ()),
         ("conflict", NAME, "CNAME", (), (WEB1_FQDN,))]),
}


@pytest.mark.parametrize("desired, records, force, expected", CASES.values(), ids=CASES.keys())
def test_plan_changes(desired, records, force, expected):
    plan = dnsplan.plan_changes([desired], zone(records), ID, 300, force=force)
    assert summary(plan) == expected
    assert all(c.kind == "dns" and c.agency == "dinkes" and c.reason for c in plan)


def test_conflict_reason_names_the_owner_and_the_way_out():
    records = {NAME: {"A": rr(WEB1)}, TXT_NAME: {"TXT": rr('"owner=other;agency=dinkes"')}}
    [change] = dnsplan.plan_changes([want(A=rr(WEB1))], zone(records), ID, 300)
    assert "owned by inventory 'other'" in change.reason and "--force" in change.reason


def test_removed_agency_owned_records_are_orphans_to_delete():
    state = zone({**owned(A=rr(WEB1)),
                  f"_provisioner.dinsos.{ZONE}": {"TXT": rr('"owner=other;agency=dinsos"')},
                  f"dinsos.{ZONE}": {"A": rr(WEB1)}})
    orphans = dnsplan.orphaned_names(state, ID, known_fqdns=[f"dkisp.{ZONE}"])
    assert [(o.agency, o.fqdn, dict(o.rrsets)) for o in orphans] == [("dinkes", NAME, {})]
    plan = dnsplan.plan_changes(orphans, state, ID, 300)
    assert [c.action for c in plan] == ["delete", "delete"]


@pytest.mark.parametrize("known, slugs, expected", [
    ([NAME], None, []),  # the name is still claimed
    ([], {"dkisp"}, []),  # outside the named agencies
    ([], {"dinkes"}, ["dinkes"]),
])
def test_orphan_scope(known, slugs, expected):
    orphans = dnsplan.orphaned_names(zone(owned(A=rr(WEB1))), ID, known, slugs)
    assert [o.agency for o in orphans] == expected


# --------------------------------------------------------------------------- desired state

@pytest.fixture
def inventory(sample):
    return load_inventory(sample.root, sample.state_dir)


def test_desired_a_record_points_at_the_hosts_public_address(inventory):
    agency = inventory.agencies["dinkes"]
    host = inventory.hosts[agency.host]
    d = dnsplan.desired_for(agency, inventory.hosts, inventory.settings)
    assert d.fqdn == f"dinkes.{ZONE}"
    assert dict(d.rrsets) == {"A": RRset(inventory.settings.record_ttl, (host.public_ipv4,))}


def test_desired_aaaa_and_cname(inventory):
    agency = inventory.agencies["dinkes"]
    host = dataclasses.replace(inventory.hosts[agency.host], public_ipv6="2001:DB8:0::20")
    hosts = {**inventory.hosts, host.name: host}
    assert dnsplan.desired_for(agency, hosts, inventory.settings).rrsets["AAAA"].values == \
        ("2001:db8::20",)
    cname = dataclasses.replace(agency, record_type="CNAME")
    assert dict(dnsplan.desired_for(cname, hosts, inventory.settings).rrsets) == \
        {"CNAME": RRset(300, (host.fqdn.lower() + ".",))}


@pytest.mark.parametrize("change, reason", [
    ({"offboarded": True}, "agency is offboarded"),
    ({"host": None, "external_url": "https://dinkes.example.org/"}, "hosted externally"),
])
def test_nothing_desired_for_agencies_not_hosted_here(inventory, change, reason):
    agency = dataclasses.replace(inventory.agencies["dinkes"], **change)
    d = dnsplan.desired_for(agency, inventory.hosts, inventory.settings)
    assert (dict(d.rrsets), d.absent_reason) == ({}, reason)


# --------------------------------------------------------------------------- plan -> update

def batch_of(desired, records, force=False):
    plan = dnsplan.plan_changes(desired, zone(records), ID, 300, force=force)
    return dnsplan.update_batch(ZONE, plan)


def test_fresh_name_requires_the_name_and_its_ownership_name_to_be_absent():
    batch = batch_of([want(A=rr(WEB1))], {})
    assert batch.prerequisites == (Prerequisite("name-absent", TXT_NAME),
                                   Prerequisite("name-absent", NAME))
    assert batch.operations == (Operation("replace", NAME, "A", 300, (WEB1,)),
                                Operation("replace", TXT_NAME, "TXT", 300, (OURS,)))


def test_update_requires_exactly_the_rrsets_the_plan_saw():
    batch = batch_of([want(A=rr(WEB2))], owned(A=rr(WEB1)))
    assert set(batch.prerequisites) == {
        Prerequisite("equals", NAME, "A", (WEB1,)),
        Prerequisite("equals", TXT_NAME, "TXT", (OURS,)),
        Prerequisite("rrset-absent", NAME, "AAAA"),
        Prerequisite("rrset-absent", NAME, "CNAME"),
    }
    assert batch.operations == (Operation("replace", NAME, "A", 300, (WEB2,)),)


def test_switch_deletes_before_it_adds():
    batch = batch_of([want(CNAME=rr(WEB1_FQDN))], owned(A=rr(WEB1)))
    assert batch.operations == (Operation("delete", NAME, "A"),
                                Operation("replace", NAME, "CNAME", 300, (WEB1_FQDN,)))
    assert Prerequisite("rrset-absent", NAME, "CNAME") in batch.prerequisites
    assert Prerequisite("equals", NAME, "A", (WEB1,)) in batch.prerequisites


def test_adoption_requires_the_observed_records_and_no_ownership_yet():
    batch = batch_of([want(A=rr(WEB1))], {NAME: {"A": rr("10.9.9.9")}}, force=True)
    assert Prerequisite("equals", NAME, "A", ("10.9.9.9",)) in batch.prerequisites
    assert Prerequisite("rrset-absent", TXT_NAME, "TXT") in batch.prerequisites


def test_conflicts_and_noops_stay_out_of_the_update():
    other = DesiredName("dkisp", f"dkisp.{ZONE}", {"A": rr(WEB1)})
    records = {NAME: {"A": rr("10.9.9.9")},
               f"dkisp.{ZONE}": {"A": rr(WEB1)},
               f"_provisioner.dkisp.{ZONE}": {"TXT": rr('"owner=paserkab-dkisp;agency=dkisp"')}}
    plan = dnsplan.plan_changes([want(A=rr(WEB1)), other], zone(records), ID, 300)
    assert dnsplan.applicable_agencies(plan) == []
    batch = dnsplan.update_batch(ZONE, plan)
    assert (batch.prerequisites, batch.operations) == ((), ())


def test_many_agencies_make_one_batch_and_expectations():
    desired = [DesiredName(f"a{i}", f"a{i}.{ZONE}", {"A": rr(WEB1)}) for i in range(40)]
    batch = batch_of(desired, {})
    assert len(batch.operations) == 80 and len(batch.prerequisites) == 80
    assert Expectation(f"a0.{ZONE}", "A", (WEB1,)) in dnsplan.expectations(batch)
    deleted = batch_of([gone()], owned(A=rr(WEB1)))
    assert dnsplan.expectations(deleted) == [Expectation(NAME, "A", ()),
                                             Expectation(TXT_NAME, "TXT", ())]


def test_update_message_carries_prerequisites_and_operations():
    message = update_message(batch_of([want(A=rr(WEB2))], owned(A=rr(WEB1))))
    prereqs = {(str(r.name), dns.rdatatype.to_text(r.rdtype)) for r in message.prerequisite}
    assert (f"{NAME}.", "A") in prereqs and (f"{TXT_NAME}.", "TXT") in prereqs
    assert all(r.ttl == 0 for r in message.prerequisite)
    assert [dns.rdatatype.to_text(r.rdtype) for r in message.update] == ["A", "A"]  # delete, add


# --------------------------------------------------------------------------- safety gate

def owned_zone(count: int) -> ZoneState:
    records = {}
    for i in range(count):
        records[f"a{i}.{ZONE}"] = {"A": rr(WEB1)}
        records[f"_provisioner.a{i}.{ZONE}"] = {"TXT": rr(f'"owner={ID};agency=a{i}"')}
    records[f"foreign.{ZONE}"] = {"A": rr(WEB1)}
    return zone(records)


def updates(count: int) -> Plan:
    return Plan(tuple(Change(f"a{i}", "dns", "update", f"a{i}.{ZONE}", "A", (WEB1,), (WEB2,))
                      for i in range(count)))


@pytest.mark.parametrize("owned_count, touched, refused", [
    (9, 9, False),  # too few owned records for the gate (octoDNS's MIN_EXISTING_RECORDS)
    (10, 3, False),  # 30 % is allowed
    (10, 4, True),
    (40, 13, True),
])
def test_safety_gate(owned_count, touched, refused):
    state = owned_zone(owned_count)
    owned_records = dnsplan.owned_record_count(state, ID)
    assert owned_records == owned_count
    problem = dnsplan.safety_problem(updates(touched), owned_records, 0.3)
    assert (problem is not None) == refused
    if refused:
        assert f"{touched} of {owned_count}" in problem


def test_creates_and_noops_do_not_count_for_the_gate():
    plan = Plan(tuple(Change(f"a{i}", "dns", "create", f"a{i}.{ZONE}", "A", (), (WEB1,))
                      for i in range(30)))
    assert dnsplan.safety_problem(plan, 10, 0.3) is None


# --------------------------------------------------------------------------- the generic plan

def test_plans_of_several_kinds_combine_and_count():
    dns_part = dnsplan.plan_changes([want(A=rr(WEB2))], zone(owned(A=rr(WEB1))), ID, 300)
    vhost = Plan((Change("dinkes", "vhost", "create", "dinkes.conf", new=("server_name ...",)),))
    plan = dns_part + vhost
    assert plan.counts() == {"create": 1, "update": 1, "delete": 0, "conflict": 0, "noop": 1}
    assert plan.has_changes and not plan.has_conflicts and plan.agencies() == ["dinkes"]
    assert len(plan.of_kind("vhost")) == 1 and plan.of_kind("dns").changes == dns_part.changes
    assert plan.rows(ZONE)[0] == ["dinkes", "dns", "update", "dinkes", "A", WEB1, WEB2,
                                  "values differ"]
    assert plan.to_dict()["changes"][0]["name"] == NAME  # JSON keeps the full name
    assert not Plan(tuple(c for c in plan if c.action == "noop")).has_changes


@pytest.mark.parametrize("make", [
    lambda: Change("dinkes", "dns", "adopt", NAME),
    lambda: Outcome("dinkes", "dns", "done"),
])
def test_unknown_actions_and_statuses_are_refused(make):
    with pytest.raises(ValueError):
        make()
