"""Web hosts (paramiko + Ansible) and TLS (ACME) against the real lab.

Real OpenSSH, nginx, BIND and Pebble on this run's loopback prefix
(PROVISIONER_TEST_NET): no mocks. Sites are rendered by site.py, DNS records are
made by dnsops (signed RFC 2136 updates), certificates come from Pebble.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from provisioner.dns import step as dnsops
from provisioner.dns.client import DnsClient
from provisioner.errors import HostError
from provisioner.hosts import ansible
from provisioner.hosts.agent import HostClient
from provisioner.hosts.deploy import deploy_sites, site_bundle
from provisioner.registry.models import Agency, Host, Inventory
from provisioner.site import render as site
from provisioner.tls.certs import cert_info, read_records
from provisioner.tls.decisions import cert_targets
from provisioner.tls.issuer import Issuer
from provisioner.tls.served import served_problems, served_serial

pytestmark = pytest.mark.integration

BASE = ("dinkes", "dishub", "bapenda", "dpupr")  # web1, web1, web2, web3 (sudo user)
HOSTS = ("web1", "web2", "web3")
BROKEN = "    bogus_directive on;\n"


# --------------------------------------------------------------------------- helpers

def agencies(inv: Inventory, *slugs: str) -> list[Agency]:
    return [inv.agencies[s] for s in slugs]


def get(inv: Inventory, slug: str, path: str = "/") -> tuple[int, bytes]:
    """HTTP GET from the agency's host address with its Host header (no resolver)."""
    agency = inv.agencies[slug]
    connection = http.client.HTTPConnection(inv.hosts[agency.host].public_ipv4, 80, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": agency.fqdn})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def serves_site(inv: Inventory, slug: str) -> bool:
    status, body = get(inv, slug)
    return status == 200 and inv.agencies[slug].name.encode() in body


def nginx_workers(lab, host: str) -> set[int]:
    """PIDs of the host's nginx workers: new ones appear only when nginx reloads."""
    spec = next(s for s in lab.lab.servers() if s.name == f"{host}-nginx")
    master = lab.lab.running_pid(spec)
    workers = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                workers.add(int(entry.name))
    return workers


def deploy(inv: Inventory, slugs, *, tls_ready: bool = False, broken: str = ""):
    bundles = [site_bundle(a, inv, tls_ready=tls_ready) for a in agencies(inv, *slugs)]
    bundles = [dataclasses.replace(b, vhost=b.vhost.replace(b"server_tokens off;\n",
                                                            b"server_tokens off;\n" + BROKEN.encode()))
               if b.slug == broken else b for b in bundles]
    return deploy_sites(inv, bundles)


def host_clients(inv: Inventory) -> dict[str, HostClient]:
    clients = {name: HostClient(host, inv.settings.known_hosts_file)
               for name, host in inv.hosts.items()}
    for client in clients.values():
        client.connect()
    return clients


def verified_handshake(address: str, sni: str, cafiles) -> ssl.SSLSocket:
    """A TLS handshake that verifies chain and name against the given roots only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as conn:
        return conn.getpeercert()


@pytest.fixture(scope="module")
def inv(lab) -> Inventory:
    return lab.inventory


@pytest.fixture(scope="module")
def first_deploy(inv, lab):
    """The base agencies deployed once, with the nginx workers before and after."""
    before = {h: nginx_workers(lab, h) for h in HOSTS}
    report = deploy(inv, BASE)
    after = {h: nginx_workers(lab, h) for h in HOSTS}
    return report, before, after


@pytest.fixture(scope="module")
def clients(inv):
    found = host_clients(inv)
    yield found
    for client in found.values():
        client.close()


# --------------------------------------------------------------------------- paramiko

def test_preflight_passes_on_every_lab_host(inv, clients):
    for name, client in clients.items():
        result = client.preflight()
        assert result.ok, result.problems
        assert result.uid == 0 and result.nginx_version and result.nginx_test_ok
        assert set(result.free_bytes) == {str(inv.hosts[name].web_root),
                                          str(inv.hosts[name].tls_dir),
                                          str(inv.hosts[name].nginx_sites_dir)}


def test_an_unknown_host_key_is_refused(inv, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostError, match="unknown") as caught:
        HostClient(inv.hosts["web1"], empty).connect()
    assert "web1" in str(caught.value) and "known_hosts" in str(caught.value)


def test_a_changed_host_key_is_refused(inv, lab, tmp_path):
    web1, web2 = inv.hosts["web1"], inv.hosts["web2"]
    lines = inv.settings.known_hosts_file.read_text().splitlines()
    web2_key = next(line.split(None, 1)[1] for line in lines
                    if line.split()[0] == web2.ssh_address)
    swapped = tmp_path / "known_hosts"
    swapped.write_text(f"{web1.ssh_address} {web2_key}\n")  # web1's name, web2's key
    with pytest.raises(HostError, match="CHANGED"):
        HostClient(web1, swapped).connect()


@pytest.mark.parametrize("slug, absent", [("dinkes", "disbun"), ("dpupr", "dpmd")])  # web1, web3
def test_facts_report_sites_vhosts_and_edits_in_one_connection(inv, lab, clients, first_deploy,
                                                               slug, absent):
    agency = inv.agencies[slug]
    host = inv.hosts[agency.host]
    index = lab.lab.local(host, site.site_dir(agency, host) / "index.html")
    original = index.read_bytes()
    index.write_bytes(b"<p>edited by the agency</p>")
    try:
        rendered = site.render_site(agency)
        facts = clients[host.name].facts(agencies(inv, slug, absent), inv.settings,
                                         {slug: rendered})
    finally:
        index.write_bytes(original)
    vhost = site_bundle(agency, inv, tls_ready=False).vhost
    assert facts.sites[slug].vhost_sha256 == site.sha256_hex(vhost)
    assert facts.sites[slug].edited == ["index.html"]
    plan = {c.path: c.action for c in facts.sites[slug].plan(rendered)}
    assert plan["index.html"] == "keep-edited" and plan["maklumat.html"] == "unchanged"
    assert facts.sites[absent].vhost_sha256 is None and facts.sites[absent].deployed is None
    cert = site.cert_paths(agency, host, inv.settings).fullchain
    assert cert in facts.certs


# --------------------------------------------------------------------------- Ansible deploy

def test_first_deploy_creates_every_site_with_one_reload_per_host(inv, first_deploy):
    report, before, after = first_deploy
    assert report.run.ok, report.run.output_tail
    assert {s: a.status for s, a in report.agencies.items()} == dict.fromkeys(BASE, "changed")
    assert {h: d.reloaded for h, d in report.hosts.items()} == dict.fromkeys(HOSTS, True)
    assert all(d.nginx_tests == 1 for d in report.hosts.values())
    for host in HOSTS:
        assert after[host] and not after[host] & before[host]  # new workers: reloaded
    for slug in BASE:
        assert serves_site(inv, slug)


def test_a_second_deploy_changes_nothing_and_does_not_reload(inv, lab, first_deploy):
    before = {h: nginx_workers(lab, h) for h in HOSTS}
    report = deploy(inv, BASE)
    assert {s: a.status for s, a in report.agencies.items()} == dict.fromkeys(BASE, "ok")
    assert all(not d.reloaded and d.nginx_tests == 0 for d in report.hosts.values())
    assert all(s.changed == 0 for s in report.run.stats.values())
    assert {h: nginx_workers(lab, h) for h in HOSTS} == before


def test_a_broken_vhost_fails_alone_and_every_neighbour_keeps_serving(inv, lab, first_deploy):
    web1 = inv.hosts["web1"]
    sites_before = sorted(p.name for p in web1.nginx_sites_dir.iterdir())
    assert all(serves_site(inv, slug) for slug in BASE)

    report = deploy(inv, (*BASE, "disbun", "diskan"), broken="disbun")

    bad = report.agencies["disbun"]
    assert bad.status == "failed" and bad.vhost == "rejected"
    assert "bogus_directive" in bad.reason
    assert Path(bad.rejected_file).read_bytes().count(b"bogus_directive") == 1
    assert Path(bad.rejected_file).parent == ansible.rejected_dir(web1)
    assert report.agencies["diskan"].status == "changed"
    assert {report.agencies[s].status for s in BASE} == {"ok"}
    assert sorted(p.name for p in web1.nginx_sites_dir.iterdir()) == sorted(
        [*sites_before, "diskan.conf"])
    assert all(serves_site(inv, slug) for slug in (*BASE, "diskan"))
    with pytest.raises(http.client.RemoteDisconnected):
        get(inv, "disbun")  # the catch-all closes the connection (444)
    assert report.hosts["web1"].reloaded and not report.hosts["web2"].reloaded


def test_an_unreachable_host_fails_only_its_agencies(inv, first_deploy):
    web2 = inv.hosts["web2"]
    with tempfile.TemporaryDirectory(prefix="kh", dir="/tmp") as scratch:
        # Fresh control sockets: a live ControlPersist master would skip the key check.
        known_hosts = Path(scratch) / "known_hosts"
        known_hosts.write_text("\n".join(
            line for line in inv.settings.known_hosts_file.read_text().splitlines()
            if not line.startswith((web2.ssh_address, f"[{web2.ssh_address}]"))) + "\n")
        settings = dataclasses.replace(inv.settings, known_hosts_file=known_hosts,
                                       lab=dataclasses.replace(inv.settings.lab,
                                                               dir=Path(scratch) / "lab"))
        try:
            report = deploy(dataclasses.replace(inv, settings=settings), BASE)
        finally:
            close_masters(Path(scratch) / "lab" / "cp")
    assert report.agencies["bapenda"].status == "failed"
    assert "host web2 unreachable" in report.agencies["bapenda"].reason
    assert "Host key verification failed" in report.agencies["bapenda"].reason
    assert {report.agencies[s].status for s in ("dinkes", "dishub")} == {"ok"}


def close_masters(control_dir: Path) -> None:
    for sock in control_dir.glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
                       capture_output=True, timeout=10)


# --------------------------------------------------------------------------- TLS

@pytest.fixture(scope="module", params=["dinkes", "dpupr"])  # web1 (root), web3 (sudo user)
def dinkes_https(request, inv, clients, first_deploy):
    """An agency with its DNS record, an HTTP-01 certificate and its HTTPS vhost."""
    slug = request.param
    dnsops.dns_step(inv, agencies(inv, slug))
    issuer = Issuer(inv, clients, DnsClient(inv.settings))
    [target] = cert_targets(inv, agencies(inv, slug))
    [result] = issuer.obtain([target])
    report = deploy(inv, (slug,), tls_ready=True)
    return target, result, report


def https_agency(inv: Inventory, target) -> tuple[str, Agency, Host]:
    agency = inv.agencies[target.key]
    return agency.slug, agency, inv.hosts[agency.host]


def test_an_http01_certificate_is_issued_installed_and_served(inv, lab, dinkes_https):
    target, result, report = dinkes_https
    slug, agency, host = https_agency(inv, target)
    assert result.status == "changed", result.reason
    assert result.info.names == (agency.fqdn,)
    install = target.installs[0]
    assert stat.S_IMODE(os.stat(lab.lab.local(host, install.key)).st_mode) == 0o600
    challenges = lab.lab.local(host, site.acme_challenge_dir(host))
    assert list(challenges.iterdir()) == []  # tokens removed
    record = read_records(inv.state_dir)
    assert [r.serial for r in record if r.key == slug] == [result.info.serial_hex]
    assert b"PRIVATE" not in (inv.state_dir / "certs" / f"{slug}.json").read_bytes()

    assert report.agencies[slug].status == "changed" and report.hosts[host.name].reloaded
    assert served_problems(inv, [result]) == {}
    assert served_serial(host.public_ipv4, 443, agency.fqdn) == result.info.serial
    peer = verified_handshake(host.public_ipv4, agency.fqdn, inv.settings.trust_roots)
    assert ("DNS", agency.fqdn) in peer["subjectAltName"]
    assert get(inv, slug)[0] == 301  # HTTP now redirects to HTTPS


def test_renew_replaces_a_due_certificate_and_the_site_serves_it(inv, lab, cli, dinkes_https):
    target, first, _report = dinkes_https
    slug, agency, host = https_agency(inv, target)
    workers = nginx_workers(lab, host.name)

    renewed = cli("renew", slug, "--days", "100000", "--format", "json")

    assert renewed.exit_code == 0, renewed.stdout + renewed.stderr
    result = json.loads(renewed.stdout)["result"]
    assert result["agencies"][slug]["status"] == "changed"
    assert result["reloads"] == {host.name: 1}
    # every connection right after the run: no old worker still answers with the old one
    (served, *others) = {served_serial(host.public_ipv4, 443, agency.fqdn)
                         for _ in range(20)}
    assert not others and served != first.info.serial
    assert f"serial {served:x}" in result["agencies"][slug]["detail"]
    assert nginx_workers(lab, host.name) != workers

    again = cli("renew", slug, "--format", "json")  # 30 days: nothing is due
    assert again.exit_code == 0
    assert json.loads(again.stdout)["result"]["reloads"] == {}
    assert json.loads(again.stdout)["result"]["agencies"][slug]["status"] == "ok"

    listed = {c["key"]: c for c in json.loads(cli("certs", "--format", "json").stdout)}
    assert listed[slug]["serial"] == f"{served:x}" and listed[slug]["status"] == "ok"
    live = json.loads(cli("certs", "--live", "--format", "json").stdout)
    found = next(c for c in live if c["key"] == slug)
    assert (found["serial"], found["host"], found["source"]) == (f"{served:x}", host.name, "host")
    assert next(c for c in live if c["key"] == "dishub")["status"] == "missing"


def test_renew_dry_run_changes_nothing(inv, cli, dinkes_https):
    target, _result, _report = dinkes_https
    slug, agency, host = https_agency(inv, target)
    before = served_serial(host.public_ipv4, 443, agency.fqdn)
    dry = cli("renew", slug, "--days", "100000", "--dry-run", "--format", "json")
    assert dry.exit_code == 0
    output = json.loads(dry.stdout)
    assert output["result"] is None
    assert [c["action"] for c in output["plan"]["changes"]] == ["update"]
    assert served_serial(host.public_ipv4, 443, agency.fqdn) == before


def test_a_wildcard_certificate_is_issued_through_dns01(inv, clients, first_deploy):
    wildcard = dataclasses.replace(inv, settings=dataclasses.replace(
        inv.settings, tls_mode="dns-01-wildcard"))
    dnsops.dns_step(wildcard, agencies(wildcard, "dkisp"))
    dns = DnsClient(wildcard.settings)
    [target] = cert_targets(wildcard, agencies(wildcard, "dkisp", "setda"))
    assert {i.host for i in target.installs} == {"web1", "web2"}

    [result] = Issuer(wildcard, clients, dns).obtain([target])

    assert result.status == "changed", result.reason
    assert set(result.info.names) == {"*.paserkab.go.id", "paserkab.go.id"}
    for install in target.installs:
        assert stat.S_IMODE(os.stat(install.key).st_mode) == 0o600
        assert cert_info(install.fullchain.read_bytes()).serial == result.info.serial
    for server in wildcard.settings.nameservers:  # the challenge records are gone
        assert dns.query(server, "_acme-challenge.paserkab.go.id", "TXT").rrset is None

    deploy(wildcard, ("dkisp",), tls_ready=True)
    host = wildcard.hosts["web2"]
    assert served_serial(host.public_ipv4, 443, "dkisp.paserkab.go.id") == result.info.serial
    verified_handshake(host.public_ipv4, "dkisp.paserkab.go.id", wildcard.settings.trust_roots)


class CountingIssuer(Issuer):
    """The real issuer, counting the orders it starts."""

    orders_started = 0

    def _start_order(self, target):
        self.orders_started += 1
        return super()._start_order(target)


def test_no_order_when_the_name_points_at_another_host(inv, clients, first_deploy):
    bpbd = inv.agencies["bpbd"]  # hosted on web2
    elsewhere = dataclasses.replace(inv, agencies={**inv.agencies, "bpbd": dataclasses.replace(
        bpbd, host="web1")})
    dnsops.dns_step(elsewhere, [elsewhere.agencies["bpbd"]])  # its record now names web1
    deploy(inv, ("bpbd",))
    issuer = CountingIssuer(inv, clients, DnsClient(inv.settings))

    [result] = issuer.obtain(cert_targets(inv, [bpbd]))

    assert result.status == "failed"
    assert inv.hosts["web1"].public_ipv4 in result.reason
    assert "expected " + inv.hosts["web2"].public_ipv4 in result.reason
    assert issuer.orders_started == 0


def test_no_order_when_no_vhost_serves_the_challenge(inv, clients, first_deploy):
    dnsops.dns_step(inv, agencies(inv, "distan"))  # DNS right, but no vhost deployed
    issuer = CountingIssuer(inv, clients, DnsClient(inv.settings))

    [result] = issuer.obtain(cert_targets(inv, agencies(inv, "distan")))

    assert result.status == "failed" and "cannot fetch" in result.reason
    assert issuer.orders_started == 0
    assert list(site.acme_challenge_dir(inv.hosts["web2"]).iterdir()) == []
