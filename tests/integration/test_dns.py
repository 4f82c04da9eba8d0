"""The DNS step against the lab's real servers, in both flavours: BIND (ns1, the
primary, and ns2, its secondary) and PowerDNS (one primary with the sqlite3 backend).

Each test works on its own copy of the lab inventory with its own ``inventory_id``
and agency names, so ownership, orphan sweeps and the safety gate only ever see that
test's records. Outcomes are checked with raw dnspython queries to each server (and
records "made by someone else" with raw signed updates), never through the client
under test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
import threading
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
import yaml

from provisioner.dns import plan as dnsplan
from provisioner.dns import step as dnsops
from provisioner.dns.client import DnsClient
from provisioner.dns.tsig import load_tsig_key
from provisioner.errors import DNSError
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Inventory

from .conftest import SAMPLE_INVENTORY, CliResult, TestLab, make_test_inventory, run_cli

pytestmark = pytest.mark.integration


FLAVOURS = ("bind", "powerdns")


class DnsInventory:
    """A private inventory on the session lab: own inventory_id, own agency names, its
    DNS on BIND (ns1 and ns2) or on PowerDNS (one primary)."""

    def __init__(self, lab: TestLab, root: Path, tag: str, flavour: str = "bind"):
        self.lab = lab
        self.root = make_test_inventory(root, lab.prefix, agencies=False)
        self.state_dir = lab.state_dir
        self.tag = tag
        self.flavour = flavour
        self.inventory_id = f"test-{tag}"
        self.set(inventory_id=self.inventory_id)
        if flavour == "powerdns":
            pdns = lab.lab.pdns_settings().primary
            server = {"name": pdns.name, "address": pdns.address, "port": pdns.port}
            self.set(dns_primary=server, nameservers=[dict(server)])
        settings = self.load().settings
        self.servers = {ns.name.split(".")[0]: ns.address for ns in settings.nameservers}
        self.primary = settings.primary.address
        self.secondary = self.servers.get("ns2", self.primary)  # BIND's ns2, else the primary

    def everywhere(self, values: list[str]) -> dict[str, list[str]]:
        """What on_every_server answers when every server serves ``values``."""
        return dict.fromkeys(self.servers, values)

    def slug(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def set(self, **settings) -> None:
        path = self.root / "group_vars" / "all.yml"
        data = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**data, **settings}, sort_keys=False))

    def add(self, name: str, host: str = "web1", **fields) -> str:
        """Write agencies/<tag>-<name>.yml from the sample dinkes file; return the slug."""
        data = yaml.safe_load((SAMPLE_INVENTORY / "agencies" / "dinkes.yml").read_text())
        slug = self.slug(name)
        data.update(slug=slug, host=host, **fields)
        (self.root / "agencies" / f"{slug}.yml").write_text(
            yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
        return slug

    def remove(self, slug: str) -> None:
        (self.root / "agencies" / f"{slug}.yml").unlink()

    def load(self) -> Inventory:
        return load_inventory(self.root, self.state_dir)

    def fqdn(self, slug: str) -> str:
        return f"{slug}.{self.lab.inventory.settings.zone}"

    def cli(self, *args: str, subprocess: bool = False) -> CliResult:
        return run_cli(self.root, self.state_dir, *args, subprocess=subprocess)


@pytest.fixture(params=FLAVOURS)
def dinv(lab: TestLab, tmp_path: Path, request: pytest.FixtureRequest) -> DnsInventory:
    tag = "t" + hashlib.sha1(request.node.name.encode()).hexdigest()[:6]
    return DnsInventory(lab, tmp_path / "inventory", tag, request.param)


@pytest.fixture
def bind_dinv(lab: TestLab, tmp_path: Path, request: pytest.FixtureRequest) -> DnsInventory:
    """For what only BIND's pair has: a secondary that lags."""
    tag = "t" + hashlib.sha1(request.node.name.encode()).hexdigest()[:6]
    return DnsInventory(lab, tmp_path / "inventory", tag)


# --------------------------------------------------------------------------- raw DNS helpers

def served(address: str, name: str, rdtype: str) -> list[str]:
    """What one server answers for (name, rdtype), recursion off, exact owner name only."""
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, address, timeout=2)
    assert response.flags & dns.flags.AA
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text().lower() for rrset in response.answer
                  if rrset.name == dns.name.from_text(name) and rrset.rdtype == wanted
                  for rd in rrset)


def serial(address: str, zone: str) -> int:
    return int(served(address, zone, "SOA")[0].split()[2])


def on_every_server(dinv: DnsInventory, name: str, rdtype: str) -> dict[str, list[str]]:
    return {server: served(address, name, rdtype) for server, address in dinv.servers.items()}


def raw_update(dinv: DnsInventory, build) -> str:
    """Someone else's signed update (dnspython directly, the lab's key); returns the rcode."""
    settings = dinv.load().settings
    key = load_tsig_key(settings.tsig_key_file)
    update = dns.update.UpdateMessage(settings.zone)
    build(update)
    update.use_tsig(dns.tsig.Key(key.name, key.secret, key.algorithm))
    primary = settings.primary
    response = dns.query.tcp(update, primary.address, port=primary.port, timeout=3)
    return dns.rcode.to_text(response.rcode())


# --------------------------------------------------------------------------- create, re-apply

def test_create_then_reapply_changes_nothing(lab: TestLab, dinv: DnsInventory):
    a_slug = dinv.add("plain", host="web1")
    cname_slug = dinv.add("alias", host="web2", record_type="CNAME")
    inv = dinv.load()
    web1, web2 = inv.hosts["web1"], inv.hosts["web2"]

    first = dnsops.dns_step(inv, inv.select([a_slug, cname_slug]))
    assert [o.status for o in first.outcomes] == ["changed", "changed"]
    assert first.update_messages == 1 and first.propagation.in_sync
    owner = f'"owner={dinv.inventory_id};agency={a_slug}"'
    assert on_every_server(dinv, dinv.fqdn(a_slug), "A") == \
        dinv.everywhere([web1.public_ipv4])
    assert on_every_server(dinv, f"_provisioner.{dinv.fqdn(a_slug)}", "TXT") == \
        dinv.everywhere([owner])
    assert on_every_server(dinv, dinv.fqdn(cname_slug), "CNAME") == \
        dinv.everywhere([web2.fqdn + "."])
    zone_serial = serial(dinv.primary, inv.settings.zone)

    again = dnsops.dns_step(inv, inv.select([a_slug, cname_slug]))
    assert again.plan.plan.counts()["noop"] == len(again.plan.plan) == 4
    assert [o.status for o in again.outcomes] == ["ok", "ok"]
    assert again.update_messages == 0 and not again.applied
    assert serial(dinv.primary, inv.settings.zone) == zone_serial


def test_plan_and_dry_run_change_nothing(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("dry")
    before = serial(dinv.primary, lab.inventory.settings.zone)
    planned = dinv.cli("plan", slug, "--only", "dns", "--format", "json")
    assert planned.exit_code == 0, planned.stderr
    rows = [(c["action"], c["rdtype"], c["new"]) for c in json.loads(planned.stdout)["changes"]]
    assert rows == [("create", "A", [dinv.load().hosts["web1"].public_ipv4]),
                    ("create", "TXT", [f'"owner={dinv.inventory_id};agency={slug}"'])]
    dry = dinv.cli("onboard", slug, "--only", "dns", "--dry-run")
    assert dry.exit_code == 0 and "create" in dry.stdout
    assert serial(dinv.primary, lab.inventory.settings.zone) == before
    assert served(dinv.primary, dinv.fqdn(slug), "A") == []


# --------------------------------------------------------------------------- update, conflict

def test_host_change_updates_the_record(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("moving", host="web1")
    inv = dinv.load()
    dnsops.dns_step(inv, inv.select([slug]))
    dinv.add("moving", host="web2")
    inv = dinv.load()
    old, new = inv.hosts["web1"].public_ipv4, inv.hosts["web2"].public_ipv4

    plan = dnsops.plan_dns(inv, inv.select([slug]))
    [update] = [c for c in plan.plan if c.action == "update"]
    assert (update.rdtype, update.old, update.new) == ("A", (old,), (new,))

    result = dinv.cli("onboard", slug, "--only", "dns", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    outcome = json.loads(result.stdout)["outcomes"]
    assert [(o["agency"], o["status"]) for o in outcome] == [(slug, "changed")]
    assert on_every_server(dinv, dinv.fqdn(slug), "A") == dinv.everywhere([new])


def test_unowned_name_is_a_conflict_and_nothing_changes(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("taken")
    name = dinv.fqdn(slug)
    assert raw_update(dinv, lambda u: u.replace(name + ".", 300, "A", "10.1.2.3")) == "NOERROR"
    before = serial(dinv.primary, lab.inventory.settings.zone)

    plan = dnsops.plan_dns(dinv.load(), dinv.load().select([slug]))
    assert [(c.action, c.old) for c in plan.plan] == [("conflict", ("10.1.2.3",))]
    result = dinv.cli("onboard", slug, "--only", "dns", "--yes")
    assert result.exit_code == 1
    assert "conflict" in result.stdout and "--force" in result.stdout
    assert serial(dinv.primary, lab.inventory.settings.zone) == before
    assert served(dinv.primary, name, "A") == ["10.1.2.3"]
    assert served(dinv.primary, f"_provisioner.{name}", "TXT") == []


def test_force_adopts_an_unowned_name(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("adopted")
    name = dinv.fqdn(slug)
    assert raw_update(dinv, lambda u: u.replace(name + ".", 300, "A", "10.1.2.4")) == "NOERROR"

    result = dinv.cli("onboard", slug, "--only", "dns", "--yes", "--force")
    assert result.exit_code == 0, result.stdout + result.stderr
    web1 = dinv.load().hosts["web1"].public_ipv4
    assert on_every_server(dinv, name, "A") == dinv.everywhere([web1])
    assert served(dinv.secondary, f"_provisioner.{name}", "TXT") == \
        [f'"owner={dinv.inventory_id};agency={slug}"']
    # Adopted means owned: a plain re-run has nothing left to do.
    inv = dinv.load()
    assert dnsops.plan_dns(inv, inv.select([slug])).plan.counts()["noop"] == 2


def test_switch_between_a_and_cname(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("switch", host="web1")
    dnsops.dns_step(dinv.load(), dinv.load().select([slug]))
    dinv.add("switch", host="web1", record_type="CNAME")
    result = dnsops.dns_step(dinv.load(), dinv.load().select([slug]))
    assert result.outcomes[0].status == "changed"
    name, target = dinv.fqdn(slug), dinv.load().hosts["web1"].fqdn + "."
    assert on_every_server(dinv, name, "CNAME") == dinv.everywhere([target])
    dinv.add("switch", host="web1")
    dnsops.dns_step(dinv.load(), dinv.load().select([slug]))
    assert served(dinv.secondary, name, "CNAME") == []
    assert served(dinv.secondary, name, "A") == [dinv.load().hosts["web1"].public_ipv4]


# --------------------------------------------------------------------------- removal

def test_removal_deletes_only_owned_records(lab: TestLab, dinv: DnsInventory):
    leaving, staying = dinv.add("leaving"), dinv.add("staying")
    inv = dinv.load()
    dnsops.dns_step(inv, inv.select([leaving, staying]))
    stranger = f"{dinv.tag}-stranger.{inv.settings.zone}"
    assert raw_update(dinv, lambda u: u.replace(stranger + ".", 300, "A", "10.1.2.5")) == "NOERROR"

    result = dnsops.dns_step(inv, inv.select([leaving]), remove=True)
    assert [(c.action, c.rdtype) for c in result.plan.plan] == [("delete", "A"), ("delete", "TXT")]
    for server_address in dinv.servers.values():
        assert served(server_address, dinv.fqdn(leaving), "A") == []
        assert served(server_address, f"_provisioner.{dinv.fqdn(leaving)}", "TXT") == []
        assert served(server_address, dinv.fqdn(staying), "A") != []
    assert served(dinv.primary, stranger, "A") == ["10.1.2.5"]


def test_agency_gone_from_the_inventory_is_removed_by_all(lab: TestLab, dinv: DnsInventory):
    gone, kept = dinv.add("gone"), dinv.add("kept")
    dnsops.dns_step(dinv.load(), None)
    dinv.remove(gone)
    result = dinv.cli("onboard", "--all", "--only", "dns", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    changes = json.loads(result.stdout)["plan"]["changes"]
    assert {(c["agency"], c["action"]) for c in changes} == \
        {(gone, "delete"), (kept, "noop")}
    assert on_every_server(dinv, dinv.fqdn(gone), "A") == dinv.everywhere([])
    assert served(dinv.secondary, dinv.fqdn(kept), "A") != []


# --------------------------------------------------------------------------- safety

def test_change_between_plan_and_apply_is_detected(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("raced", host="web1")
    dnsops.dns_step(dinv.load(), dinv.load().select([slug]))
    dinv.add("raced", host="web2")
    inv = dinv.load()
    plan = dnsops.plan_dns(inv, inv.select([slug]))
    name = dinv.fqdn(slug)
    assert raw_update(dinv, lambda u: u.replace(name + ".", 300, "A", "10.1.2.6")) == "NOERROR"
    before = serial(dinv.primary, inv.settings.zone)

    with pytest.raises(DNSError, match="changed since the plan"):
        dnsops.apply_dns(inv, plan)
    assert serial(dinv.primary, inv.settings.zone) == before
    assert served(dinv.primary, name, "A") == ["10.1.2.6"]


def test_name_created_between_plan_and_apply_is_detected(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("sniped")
    inv = dinv.load()
    plan = dnsops.plan_dns(inv, inv.select([slug]))
    name = dinv.fqdn(slug)
    assert raw_update(dinv, lambda u: u.replace(name + ".", 300, "TXT", '"hello"')) == "NOERROR"
    with pytest.raises(DNSError, match="changed since the plan"):
        dnsops.apply_dns(inv, plan)
    assert served(dinv.primary, name, "A") == []
    assert served(dinv.primary, f"_provisioner.{name}", "TXT") == []


def test_safety_gate_refuses_mass_updates_unless_forced(lab: TestLab, dinv: DnsInventory):
    slugs = [dinv.add(f"g{i}", host="web1") for i in range(10)]
    dnsops.dns_step(dinv.load(), None)
    for i in range(4):
        dinv.add(f"g{i}", host="web2")
    before = serial(dinv.primary, lab.inventory.settings.zone)

    refused = dinv.cli("onboard", "--all", "--only", "dns", "--yes")
    assert refused.exit_code == 1
    assert "4 of 10 owned records" in refused.stderr
    assert serial(dinv.primary, lab.inventory.settings.zone) == before

    forced = dinv.cli("onboard", "--all", "--only", "dns", "--yes", "--force")
    assert forced.exit_code == 0, forced.stderr
    web2 = dinv.load().hosts["web2"].public_ipv4
    assert served(dinv.secondary, dinv.fqdn(slugs[0]), "A") == [web2]


# --------------------------------------------------------------------------- one line, exit 1

def one_error_line(result: CliResult) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    return lines[0]


def test_wrong_tsig_key_is_one_clear_line_and_changes_nothing(lab: TestLab, dinv: DnsInventory,
                                                              tmp_path: Path):
    slug = dinv.add("badkey")
    real = load_tsig_key(lab.inventory.settings.tsig_key_file)
    wrong_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    key_file = tmp_path / "wrong.key"
    key_file.write_text(f'key "{real.name}" {{ algorithm {real.algorithm}; '
                        f'secret "{wrong_secret}"; }};\n')
    key_file.chmod(0o600)
    dinv.set(tsig_key_file=str(key_file))
    before = serial(dinv.primary, lab.inventory.settings.zone)

    line = one_error_line(dinv.cli("onboard", slug, "--only", "dns", "--yes", subprocess=True))
    # BIND answers BADSIG, signed; PowerDNS answers NOTAUTH without a signature.
    assert ("BADSIG" if dinv.flavour == "bind" else "answered unsigned") in line
    assert repr(real.name) in line
    assert lab.inventory.settings.zone in line
    assert wrong_secret not in line and real.secret not in line
    assert serial(dinv.primary, lab.inventory.settings.zone) == before
    assert served(dinv.primary, dinv.fqdn(slug), "A") == []


def test_unreachable_primary_is_one_clear_line(lab: TestLab, dinv: DnsInventory):
    slug = dinv.add("nowhere")
    primary = lab.inventory.settings.primary
    dead = f"{lab.prefix}.99"
    dinv.set(dns_primary={"name": primary.name, "address": dead, "port": primary.port})
    line = one_error_line(dinv.cli("onboard", slug, "--only", "dns", "--yes", subprocess=True))
    assert dead in line and "connection refused" in line
    assert served(dinv.primary, dinv.fqdn(slug), "A") == []


def test_powerdns_without_tsig_allow_axfr_stops_with_a_clear_line(lab: TestLab, tmp_path: Path):
    """The zone needs TSIG-ALLOW-AXFR (the toolkit reads the zone by AXFR) besides
    TSIG-ALLOW-DNSUPDATE; without it the DNS step names the setting and changes nothing."""
    dinv = DnsInventory(lab, tmp_path / "inventory", "taxfr", "powerdns")
    slug = dinv.add("noaxfr")
    zone, key = lab.inventory.settings.zone, load_tsig_key(lab.inventory.settings.tsig_key_file)
    metadata = lab.lab.pdnsutil("get-meta", zone)
    for line in (f"TSIG-ALLOW-DNSUPDATE = {key.name}", f"TSIG-ALLOW-AXFR = {key.name}",
                 "SOA-EDIT-DNSUPDATE = INCREASE"):
        assert line in metadata
    before = serial(dinv.primary, zone)
    lab.lab.pdnsutil("set-meta", zone, "TSIG-ALLOW-AXFR")  # no value: removed
    try:
        line = one_error_line(dinv.cli("onboard", slug, "--only", "dns", "--yes",
                                       subprocess=True))
    finally:
        lab.lab.pdnsutil("set-meta", zone, "TSIG-ALLOW-AXFR", key.name)
    assert "zone transfer refused" in line and repr(key.name) in line
    assert f"TSIG-ALLOW-AXFR {key.name}" in line and "allow-transfer" in line
    assert serial(dinv.primary, zone) == before
    assert served(dinv.primary, dinv.fqdn(slug), "A") == []
    result = dinv.cli("onboard", slug, "--only", "dns", "--yes")  # with it, the step works
    assert result.exit_code == 0, result.stdout + result.stderr
    assert served(dinv.primary, dinv.fqdn(slug), "A") == [dinv.load().hosts["web1"].public_ipv4]


def test_onboard_refuses_an_unknown_step(dinv: DnsInventory):
    slug = dinv.add("later")
    result = dinv.cli("onboard", slug, "--only", "dnz", "--yes")
    assert result.exit_code == 2 and "unknown step dnz" in result.stderr


# --------------------------------------------------------------------------- propagation

def test_authoritative_servers_come_from_the_ns_records(lab: TestLab):
    found = DnsClient(lab.inventory.settings).authoritative_servers()
    assert sorted((ns.name, ns.address) for ns in found) == \
        sorted((ns.name, ns.address) for ns in lab.inventory.settings.nameservers)


def test_propagation_wait_sees_ns2_catch_up(lab: TestLab, bind_dinv: DnsInventory):
    """ns2 is paused while the update lands: the bounded wait names it, then sees it catch up."""
    slug = bind_dinv.add("propagated")
    inv = bind_dinv.load()
    client = DnsClient(inv.settings, timeout=0.5)
    servers_ = client.authoritative_servers()
    plan = dnsops.plan_dns(inv, inv.select([slug]), client=client)
    ns2_name = next(ns.name for ns in inv.settings.nameservers
                    if ns.address == inv.settings.lab.ns2)
    ns2_pid = lab.lab.running_pid(next(s for s in lab.lab.servers() if s.name == "ns2"))
    assert ns2_pid
    os.kill(ns2_pid, signal.SIGSTOP)
    try:
        result = dnsops.apply_dns(inv, plan, client=client, propagation_timeout=1.0)
        assert result.failed and result.applied
        assert [s.server for s in result.propagation.lagging()] == [ns2_name]
        assert "ns2" in result.outcomes[0].detail
        resume = threading.Timer(1.0, os.kill, (ns2_pid, signal.SIGCONT))
        resume.start()
        batch = dnsplan.update_batch(inv.settings.zone, plan.plan)
        report = client.wait_for_propagation(dnsplan.expectations(batch), result.serial,
                                             servers=servers_, timeout=10)
        resume.join()
    finally:
        os.kill(ns2_pid, signal.SIGCONT)
    assert report.in_sync and report.seconds >= 0.5
    assert {s.serial for s in report.servers} == {result.serial}
    web1 = inv.hosts["web1"].public_ipv4
    assert served(bind_dinv.secondary, bind_dinv.fqdn(slug), "A") == [web1]


# --------------------------------------------------------------------------- batch

def test_forty_agencies_are_one_update_message(lab: TestLab, dinv: DnsInventory):
    slugs = [dinv.add(f"b{i:02d}", host="web1" if i % 2 else "web2") for i in range(40)]
    inv = dinv.load()
    client = DnsClient(inv.settings)
    result = dnsops.dns_step(inv, None, client=client)
    assert client.sent["update"] == 1 and result.update_messages == 1
    assert result.plan.plan.counts()["create"] == 80
    assert [o.status for o in result.outcomes] == ["changed"] * 40
    for slug in slugs:
        host = inv.hosts[inv.agencies[slug].host]
        assert served(dinv.secondary, dinv.fqdn(slug), "A") == [host.public_ipv4]
