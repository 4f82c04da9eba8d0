"""Faults and abuse on a real lab: servers stopped, hosts broken, the CA refusing, runs
killed, hostile registry input. Every scenario asserts that nothing was lost or changed
where it must not be, and that a re-run converges.

The module brings up its own lab (offset 150 inside PROVISIONER_TEST_NET): it stops
servers and breaks hosts on purpose. Each test uses its own agencies, so the scenarios
do not depend on each other; they share the lab and its base onboarding.
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provisioner.dns import step as dnsops
from provisioner.lifecycle import archive as archiving
from provisioner.lifecycle import offboard, onboard
from provisioner.site import render as site
from provisioner.tls.issuer import Issuer
from tests.unit.test_registry_hostile import AGENCY_PATHS, SAMPLE_AGENCY, set_path, values

from .faultkit import FaultLab, file_states, onboarded_lab

BASE = ("dinkes", "setda", "kesbangpol", "bpbd", "dkisp")  # web1 x3, web2 x2


@pytest.fixture(scope="module")
def flab(tmp_path_factory: pytest.TempPathFactory):
    with onboarded_lab(tmp_path_factory.mktemp("faults"), 150, BASE) as fault_lab:
        yield fault_lab


def outcomes(out: dict, slug: str) -> dict[str, dict]:
    """Onboarding outcomes of one agency by step."""
    return {o["kind"]: o for o in out["outcomes"] if o["agency"] == slug}


def converges(flab: FaultLab, *slugs: str) -> None:
    """An onboarding of the agencies succeeds, and the next one changes nothing."""
    code, out = flab.json("onboard", *slugs, "--yes")
    assert code == 0, [o for o in out["outcomes"] if o["status"] == "failed"]
    code, out = flab.json("onboard", *slugs, "--yes")
    assert code == 0 and {o["status"] for o in out["agencies"].values()} == {"ok"}, out
    assert sum(out["reloads"].values()) == 0
    assert flab.owned_orphans() == []
    flab.nginx_config_ok()


def http_status(flab: FaultLab, slug: str) -> int:
    agency = flab.agency(slug)
    connection = http.client.HTTPConnection(flab.inventory.hosts[agency.host].public_ipv4, 80,
                                            timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": agency.fqdn})
        return connection.getresponse().status
    finally:
        connection.close()


# =========================================================================== DNS servers


def test_ns1_stopped_before_onboarding(flab: FaultLab):
    hosts = flab.host_tree()
    with flab.stopped("ns1"):
        result = flab.cli("onboard", "dinsos", "--yes")

        assert result.exit_code == 1
        assert result.stderr.startswith("error: dns ") and "ns1" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert flab.host_tree() == hosts
    converges(flab, "dinsos")


def test_ns1_stopped_between_plan_and_apply(flab: FaultLab):
    hosts = flab.host_tree()
    archives = flab.lab.state_dir / "archives"

    try:
        onboarding = flab.confirm_after("Apply this plan?", lambda: flab.stop("ns1"),
                                        "onboard", "disbun")
    finally:
        flab.lab.lab.up()
    assert onboarding.exit_code == 1 and "dns" in onboarding.stderr
    assert flab.host_tree() == hosts  # the DNS step failed first: no host was touched
    converges(flab, "disbun")

    hosts = flab.host_tree()
    try:
        offboarding = flab.confirm_after("Offboard setda?", lambda: flab.stop("ns1"),
                                         "offboard", "setda")
    finally:
        flab.lab.lab.up()
    assert offboarding.exit_code == 1
    assert "dns: failed" in offboarding.stderr and "not done: vhost, site, cert, registry" \
        in offboarding.stderr
    assert flab.host_tree() == hosts  # archived, nothing removed
    assert len(archiving.find_archives(archives, "setda")) == 1
    code, out = flab.json("offboard", "setda", "--yes")
    assert code == 0, out["result"]
    assert len(archiving.find_archives(archives, "setda")) == 1  # the re-run reused it
    assert flab.owned_orphans() == []


def test_ns2_stopped_the_wait_names_it_and_gives_up(flab: FaultLab,
                                                   monkeypatch: pytest.MonkeyPatch):
    inventory = flab.inventory
    agency = inventory.agencies["kesbangpol"]
    vhost = site.vhost_path(agency, inventory.hosts[agency.host])
    # The CLI waits dns.DEFAULT_PROPAGATION_TIMEOUT (10 s); the library takes a shorter one.
    monkeypatch.setattr(onboard, "apply_dns",
                        functools.partial(dnsops.apply_dns, propagation_timeout=1.0))
    with flab.stopped("ns2"):
        with offboard.Offboarding(inventory, command="test: offboard kesbangpol") as run:
            oplan = run.plan(agency, offboard.archive_dir_of(inventory, None))
            result = run.apply(oplan, propagation_timeout=1.0)

        dns = next(o for o in result.outcomes if o.kind == "dns")
        assert dns.status == "failed" and "ns2" in dns.detail
        assert result.not_run == ("vhost", "site", "cert", "registry")
        assert vhost.exists()

        code, out = flab.json("onboard", "kec-long-ikis", "--yes")
        assert code == 1
        dns = outcomes(out, "kec-long-ikis")["dns"]
        assert dns["status"] == "failed" and "ns2" in dns["detail"]
        assert "web" not in outcomes(out, "kec-long-ikis")  # nothing built on a lagging name
    monkeypatch.undo()
    code, out = flab.json("offboard", "kesbangpol", "--yes")  # waits for ns2 to catch up
    assert code == 0, out["result"]
    assert not vhost.exists() and flab.records_at("ns2", agency.fqdn) == {}
    converges(flab, "kec-long-ikis")


# =========================================================================== web hosts


def test_web_host_unreachable(flab: FaultLab):
    dinkes_site = site.site_dir(flab.agency("dinkes"), flab.inventory.hosts["web1"])
    before = file_states(dinkes_site)
    zone_before = flab.records_at("ns1", flab.agency("dinkes").fqdn)
    with flab.stopped("web1-sshd"):
        code, out = flab.json("onboard", "bkpsdm", "bapenda", "--yes")

        assert code == 1
        web = outcomes(out, "bkpsdm")["web"]
        assert web["status"] == "failed" and "web1" in web["detail"] \
            and "cannot connect" in web["detail"]
        assert outcomes(out, "bapenda")["verify"]["status"] == "ok"  # the other host went on

        result = flab.cli("offboard", "dinkes", "--yes")
        assert result.exit_code == 1 and "cannot connect" in result.stderr
        assert file_states(dinkes_site) == before
        assert flab.records_at("ns1", flab.agency("dinkes").fqdn) == zone_before
        assert not flab.agency("dinkes").offboarded
    converges(flab, "bkpsdm", "bapenda")


def test_a_changed_host_key_is_refused(flab: FaultLab):
    known_hosts = flab.inventory.settings.known_hosts_file
    original = known_hosts.read_text()
    web1 = flab.inventory.hosts["web1"]
    forged = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    known_hosts.write_text("".join(
        f"{line.split()[0]} {forged}\n" if web1.ssh_address in line.split()[0] else line + "\n"
        for line in original.splitlines()))
    hosts = flab.host_tree()
    try:
        code, out = flab.json("onboard", "bpkad", "--yes")
        assert code == 1
        assert "CHANGED" in outcomes(out, "bpkad")["web"]["detail"]
        result = flab.cli("offboard", "dinkes", "--yes")
        assert result.exit_code == 1 and "CHANGED" in result.stderr
        assert flab.host_tree() == hosts
    finally:
        known_hosts.write_text(original)
    converges(flab, "bpkad")


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


def test_write_failure_on_a_host(flab: FaultLab):
    """An immutable folder (chattr +i): even root cannot write or delete in it."""
    web1 = flab.inventory.hosts["web1"]
    diskan = site.site_dir(flab.agency("diskan"), web1)
    diskan.mkdir(parents=True)
    dinkes = site.site_dir(flab.agency("dinkes"), web1)
    before = file_states(dinkes)
    _chattr("+i", diskan)
    _chattr("+i", dinkes)
    try:
        code, out = flab.json("onboard", "diskan", "bappedalitbang", "--yes")
        assert code == 1
        web = outcomes(out, "diskan")["web"]
        assert web["status"] == "failed" and "Operation not permitted" in web["detail"]
        assert not site.vhost_path(flab.agency("diskan"), web1).exists()
        assert outcomes(out, "bappedalitbang")["verify"]["status"] == "ok"

        code, out = flab.json("offboard", "dinkes", "--yes")
        assert code == 1
        failed = out["result"]["outcomes"][-1]
        assert failed["kind"] == "site" and "Operation not permitted" in failed["detail"]
        assert file_states(dinkes) == before
        assert not flab.agency("dinkes").offboarded
    finally:
        _chattr("-i", diskan)
        _chattr("-i", dinkes)
    code, out = flab.json("offboard", "dinkes", "--yes")
    assert code == 0, out["result"]
    archived = archiving.load_archive(Path(out["result"]["archive"]))  # the first run's
    assert {rel: (f.sha256, f.mode) for rel, f in archived.site_files().items()} == before
    converges(flab, "diskan", "bappedalitbang")


def test_nginx_config_broken_by_an_unrelated_file(flab: FaultLab):
    web2 = flab.inventory.hosts["web2"]
    hand_made = web2.nginx_sites_dir / "zz-tangan.conf"
    hand_made.write_text("server {\n    listen 127.0.0.1:8081;\n    proxy_buffring off;\n}\n")
    hosts = flab.host_tree(skip=[hand_made])
    try:
        code, out = flab.json("onboard", "dkisp", "--yes")  # an agency already onboarded
        assert code == 1
        web = outcomes(out, "dkisp")["web"]["detail"]
        assert "nginx -t fails" in web and "proxy_buffring" in web and str(hand_made) in web
        result = flab.cli("offboard", "dkisp", "--yes")
        assert result.exit_code == 1
        assert "nginx -t fails" in result.stderr and "proxy_buffring" in result.stderr
        assert flab.host_tree(skip=[hand_made]) == hosts
        assert archiving.find_archives(flab.lab.state_dir / "archives", "dkisp") == []
    finally:
        hand_made.unlink()
    converges(flab, "dkisp")


# =========================================================================== the CA


def test_pebble_stopped(flab: FaultLab):
    with flab.stopped("acme"):
        code, out = flab.json("onboard", "disdikbud", "--yes")
        assert code == 1
        tls_outcome = outcomes(out, "disdikbud")["tls"]
        assert tls_outcome["status"] == "failed" and "cannot reach the ACME API" in \
            tls_outcome["detail"]
        assert http_status(flab, "disdikbud") == 200  # served over HTTP meanwhile
    converges(flab, "disdikbud")

    cert_dir = site.cert_paths(flab.agency("bpbd"), flab.inventory.hosts["web2"],
                               flab.inventory.settings).fullchain.parent
    with flab.stopped("acme"):
        code, out = flab.json("offboard", "bpbd", "--yes")
        assert code == 1
        assert out["result"]["outcomes"][-1]["kind"] == "cert"
        assert out["result"]["not_run"] == ["registry"]
        assert cert_dir.exists()
    # A restarted Pebble has forgotten the certificate: it refuses for good, which is
    # reported, and the offboarding finishes.
    code, out = flab.json("offboard", "bpbd", "--yes")
    assert code == 0, out["result"]
    cert = next(o for o in out["result"]["outcomes"] if o["kind"] == "cert")
    assert "NOT revoked" in cert["detail"]
    assert not cert_dir.exists() and flab.agency("bpbd").offboarded


class ChallengeLost(Issuer):
    """The real issuer; the challenge files vanish from the host after they were placed
    and the pre-order checks passed, just before the CA is told to validate."""

    def _finish_order(self, order):
        host = self.inventory.hosts[order.target.installs[0].host]
        for challb, _response, _validation, _name in order.challenges:
            (site.acme_challenge_dir(host) / challb.chall.encode("token")).unlink()
        return super()._finish_order(order)


def test_pebble_rejects_the_challenge(flab: FaultLab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(onboard, "Issuer", ChallengeLost)
    code, out = flab.json("onboard", "disnaker", "--yes")
    monkeypatch.undo()

    assert code == 1
    tls_outcome = outcomes(out, "disnaker")["tls"]
    assert tls_outcome["status"] == "failed" and "validation failed" in tls_outcome["detail"]
    assert "404" in tls_outcome["detail"]
    assert http_status(flab, "disnaker") == 200  # the HTTP site stays up
    assert not site.cert_paths(flab.agency("disnaker"), flab.inventory.hosts["web2"],
                               flab.inventory.settings).fullchain.exists()
    converges(flab, "disnaker")


def test_name_pointing_at_another_host_places_no_order(flab: FaultLab):
    inventory = flab.inventory
    agency = inventory.agencies["disdukcapil"]  # on web1
    elsewhere = dataclasses.replace(inventory, agencies={
        **inventory.agencies, agency.slug: dataclasses.replace(agency, host="web2")})
    dnsops.dns_step(elsewhere, [elsewhere.agencies[agency.slug]])  # its record names web2
    code, _out = flab.json("onboard", agency.slug, "--only", "web", "--yes")
    assert code == 0
    orders = flab.pebble_orders()

    code, out = flab.json("onboard", agency.slug, "--only", "tls", "--yes")

    assert code == 1
    detail = outcomes(out, agency.slug)["tls"]["detail"]
    assert inventory.hosts["web2"].public_ipv4 in detail
    assert f"expected {inventory.hosts['web1'].public_ipv4}" in detail
    assert flab.pebble_orders() == orders  # the CA never saw an order
    converges(flab, agency.slug)
    assert flab.pebble_orders() == orders + 1


# =========================================================================== killed runs


def test_onboarding_killed_at_several_points_converges(flab: FaultLab):
    slugs = ("dishub", "dlh", "dp3akb")
    # Killed as its web step starts, then in the middle of its ACME orders (challenge
    # files placed, orders pending at the CA); after the web step is covered in
    # test_onboard.py, offboarding in test_offboard.py.
    for marker, delay in (("dns:", 0.0), ("web:", 0.2)):
        flab.kill_after(marker, "onboard", *slugs, "--yes", delay=delay)
        flab.nginx_config_ok()
        flab.vhosts_complete()
    converges(flab, *slugs)
    flab.vhosts_complete()


# =========================================================================== hostile input


def _hostile_agency(path=(), value=None) -> dict:
    data = yaml.safe_load(yaml.safe_dump(SAMPLE_AGENCY))
    data.update(slug="hostile", host="web1")
    data.pop("subdomain", None)
    if path:
        set_path(data, path, value)
    return data


def test_hostile_registry_input_never_crashes_or_touches_others(flab: FaultLab):
    agency_file = flab.lab.inventory_dir / "agencies" / "hostile.yml"
    hosts = flab.lab.inventory.hosts.values()
    own = [p for host in hosts for p in (host.web_root / "hostile",
                                         host.nginx_sites_dir / "hostile.conf",
                                         host.tls_dir / "hostile")]
    mine = own + [host.acme_webroot for host in hosts]  # challenge files come and go
    codes = []

    @settings(max_examples=6, deadline=None, derandomize=True, database=None)
    @given(path=st.sampled_from(AGENCY_PATHS), value=values)
    @example(path=("description",), value="<script>alert(1)</script>")
    @example(path=("name",), value="{{ lookup('pipe','id') }}; } server { listen 80; }")
    @example(path=("maklumat",), value="$(reboot) `id` \u202e ../../etc/passwd")
    def run_plan_and_onboard(path, value):
        agency_file.write_text(yaml.safe_dump(_hostile_agency(path, value), allow_unicode=True),
                               encoding="utf-8")
        hosts_before = flab.host_tree(skip=mine)
        others_before = {k: v for k, v in flab.inventory_tree().items()
                         if k != str(agency_file)}
        for command in (["plan", "hostile"], ["onboard", "hostile", "--yes"]):
            result = flab.cli(*command)  # an exception other than SystemExit fails here
            codes.append(result.exit_code)
            assert result.exit_code in (0, 1, 2), result.stderr
            if result.exit_code == 2:
                assert result.stderr.startswith("error: "), result.stderr
        assert flab.host_tree(skip=mine) == hosts_before
        assert {k: v for k, v in flab.inventory_tree().items()
                if k != str(agency_file)} == others_before

    try:
        run_plan_and_onboard()
    finally:  # take the agency off again: nothing of it may stay behind
        agency_file.write_text(yaml.safe_dump(_hostile_agency(), allow_unicode=True),
                               encoding="utf-8")
        code, out = flab.json("offboard", "hostile", "--yes")
        agency_file.unlink()
    assert code == 0, out["result"]
    assert 0 in codes and 2 in codes  # some examples onboarded, some were refused
    assert flab.owned_orphans() == []
    assert not any(p.exists() for p in own)


# =========================================================================== TLS and secrets


def test_tls_scan_of_a_provisioned_site(flab: FaultLab, tmp_path: Path):
    agency = flab.agency("dkisp")
    address = flab.inventory.hosts[agency.host].public_ipv4
    report = tmp_path / "testssl.json"
    done = subprocess.run(
        ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none",
         "--ip", address, "--protocols", "--std", "--headers", "--jsonfile", str(report),
         f"https://{agency.fqdn}/"], capture_output=True, text=True, timeout=300)
    assert report.exists(), done.stdout + done.stderr
    findings = {f["id"]: f["finding"] for f in json.loads(report.read_text())}

    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old].startswith("not offered"), (old, findings[old])
    assert findings["TLS1_2"] == "offered"
    for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                 "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert findings[weak] == "not offered", (weak, findings[weak])
    assert findings["cipherlist_STRONG"] == "offered"
    assert "63072000" in findings["HSTS_time"]


def test_nothing_printed_or_logged_holds_a_secret(flab: FaultLab, tmp_path: Path):
    assert flab.leaks(tmp_path) == []
