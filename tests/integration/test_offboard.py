"""Offboarding and restore on a real lab: archive first, remove in order, nothing lost.

The module brings up its own lab (offset 200 inside PROVISIONER_TEST_NET): it removes
sites, revokes certificates and breaks the nginx config on purpose. Tests run in file
order and say where they build on an earlier one's state.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import stat
import tarfile
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from provisioner.lab.render import PEBBLE_MANAGEMENT_PORT
from provisioner.lifecycle import archive as archiving
from provisioner.lifecycle import offboard
from provisioner.site import render as site

from .conftest import TEST_NET, start_test_lab
from .faultkit import FaultLab, file_states

SLUG, NEIGHBOUR = "dinkes", "setda"  # both on web1


@pytest.fixture(scope="module")
def olab(tmp_path_factory: pytest.TempPathFactory):
    test_lab = start_test_lab(tmp_path_factory.mktemp("offboard"), TEST_NET, offset=200)
    try:
        fault_lab = FaultLab(test_lab)
        code, out = fault_lab.json("onboard", SLUG, NEIGHBOUR, "bpbd", "kec-batu-engau",
                                   "--yes")
        assert code == 0, out["outcomes"]
        yield fault_lab
    finally:
        test_lab.lab.down()


def https_get(olab: FaultLab, slug: str, path: str = "/") -> tuple[int, str, int]:
    """(status, body, certificate serial) of https://<agency>/path from its host's address."""
    inventory = olab.inventory
    agency = inventory.agencies[slug]
    address = inventory.hosts[agency.host].public_ipv4
    context = ssl.create_default_context(cafile=str(inventory.settings.trust_roots[0]))
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=agency.fqdn) as tls_sock:
        serial = x509.load_der_x509_certificate(tls_sock.getpeercert(True)).serial_number
        conn = http.client.HTTPConnection(agency.fqdn)
        conn.sock = tls_sock
        conn.request("GET", path, headers={"Host": agency.fqdn})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace"), serial


def cert_status(olab: FaultLab, serial: int) -> str:
    """What Pebble's management API says about a certificate it issued."""
    settings = olab.inventory.settings
    url = f"https://{settings.lab.acme}:{PEBBLE_MANAGEMENT_PORT}/cert-status-by-serial/{serial:x}"
    context = ssl.create_default_context(cafile=str(settings.acme.ca_bundle))
    return httpx.get(url, verify=context, timeout=5).json()["Status"]


def paths(olab: FaultLab, slug: str):
    inventory = olab.inventory
    agency = inventory.agencies[slug]
    host = inventory.hosts[agency.host]
    local = olab.lab.lab.local  # where the host's files are on this machine (web3: mounted)
    return (local(host, site.site_dir(agency, host)), local(host, site.vhost_path(agency, host)),
            local(host, site.cert_paths(agency, host, inventory.settings).fullchain.parent))


def edit_site(olab: FaultLab, slug: str) -> None:
    """What an agency does after going live: edit a page, upload a private file."""
    site_dir, _vhost, _cert = paths(olab, slug)
    page = site_dir / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace(
        "</main>", "<p>Berita: jadwal vaksinasi pekan ini</p></main>"), encoding="utf-8")
    report = site_dir / "berkas" / "laporan-2024.pdf"
    report.parent.mkdir(mode=0o750)
    report.write_bytes(bytes(range(256)) * 40)
    report.chmod(0o600)


@pytest.mark.parametrize("slug", [SLUG, "kec-batu-engau"])  # web1 (root), web3 (sudo user)
def test_offboard_then_restore_round_trips_byte_for_byte(olab: FaultLab, tmp_path: Path,
                                                         slug: str):
    edit_site(olab, slug)
    site_dir, vhost, cert_dir = paths(olab, slug)
    before = file_states(site_dir)
    before_vhost = vhost.read_bytes()
    _status, _body, old_serial = https_get(olab, slug)
    registry_file = olab.agency(slug).source
    registry_before = registry_file.read_text(encoding="utf-8")
    fqdn = olab.agency(slug).fqdn

    code, out = olab.json("offboard", slug, "--yes")

    assert code == 0, out["result"]
    steps = {o["kind"]: o["status"] for o in out["result"]["outcomes"]}
    assert steps == dict.fromkeys(offboard.OFFBOARD_STEPS, "changed")
    archive = Path(out["result"]["archive"])
    assert archive.parent == olab.lab.state_dir / "archives"
    assert archive.stat().st_mode & 0o777 == 0o600
    archived = archiving.load_archive(archive)
    assert archived.manifest["cert"]["serial"] == f"{old_serial:x}"
    assert {r["type"] for r in archived.manifest["dns"]} == {"A", "TXT"}
    assert b"jadwal vaksinasi" in archived.files["index.html"]
    assert archived.vhost == before_vhost
    with tarfile.open(archive) as tar:  # the certificate's key never goes into an archive
        assert not any(b"PRIVATE KEY" in tar.extractfile(m).read() for m in tar.getmembers())
    assert not site_dir.exists() and not vhost.exists() and not cert_dir.exists()
    assert olab.records_at("ns1", fqdn) == olab.records_at("ns2", fqdn) == {}
    assert cert_status(olab, old_serial) == "Revoked"
    registry_after = registry_file.read_text(encoding="utf-8")
    assert [l for l in registry_after.splitlines() if not l.startswith("status:")] == \
        registry_before.splitlines()
    assert olab.agency(slug).offboarded
    assert https_get(olab, NEIGHBOUR)[0] == 200  # the host's other sites never noticed
    olab.nginx_config_ok()

    code, out = olab.json("restore", str(archive), "--yes")

    assert code == 0, out["result"]
    kinds = {o["kind"]: o["status"] for o in out["result"]["outcomes"]}
    assert kinds["site"] == "changed" and kinds["verify"] == "ok"
    assert file_states(site_dir) == before  # the edited page and the 0600 file included
    assert (site_dir / "berkas").stat().st_mode & 0o777 == 0o750
    assert vhost.read_bytes() == before_vhost
    assert "identical" in next(o["detail"] for o in out["result"]["outcomes"]
                               if o["kind"] == "vhost")
    status, body, new_serial = https_get(olab, slug)
    assert status == 200 and "jadwal vaksinasi" in body and new_serial != old_serial
    assert not olab.agency(slug).offboarded
    assert olab.owned_orphans() == []


def test_every_change_of_the_round_trip_is_audited(olab: FaultLab):
    # Builds on the round trip above (runs in-process: the command column names pytest).
    entries = olab.json("history", "--audit", "--agency", SLUG, "--limit", "1000")[1]
    changed = {(e["kind"], e["action"]) for e in entries if e["result"] == "changed"}

    assert {("archive", "create"), ("dns", "delete"), ("vhost", "delete"), ("site", "delete"),
            ("cert", "delete"), ("site", "create"), ("dns", "create"), ("vhost", "create"),
            ("cert", "create")} <= changed
    statuses = [e["change"]["new"] for e in entries if e["kind"] == "registry"]
    assert statuses == [["offboarded"], ["active"]]
    archive_entry = next(e for e in entries if e["kind"] == "archive")
    assert ".tar.gz" in archive_entry["change"]["done"]
    assert all(e["operator"] and e["result"] != "failed" for e in entries)


def test_restore_refuses_a_tampered_archive_and_changes_nothing(olab: FaultLab, tmp_path: Path):
    archive = archiving.find_archives(olab.lab.state_dir / "archives", SLUG)[0]
    copy = tmp_path / archive.name
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    shutil.copy(archiving.checksum_path(archive), archiving.checksum_path(copy))
    hosts, inventory = olab.host_tree(), olab.inventory_tree()
    audit = (olab.lab.state_dir / "audit.jsonl").read_bytes()

    result = olab.cli("restore", str(copy), "--yes")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "checksum mismatch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert olab.host_tree() == hosts and olab.inventory_tree() == inventory
    assert (olab.lab.state_dir / "audit.jsonl").read_bytes() == audit


@pytest.mark.parametrize("slug", [SLUG, "kec-batu-engau"])  # web1, web3
def test_restore_never_overwrites_a_page_changed_since(olab: FaultLab, slug: str):
    # Live again (restored above): its current page differs from the archive.
    archive = archiving.find_archives(olab.lab.state_dir / "archives", slug)[0]
    site_dir, _vhost, _cert = paths(olab, slug)
    page = site_dir / "index.html"
    page.write_text(page.read_text(encoding="utf-8") + "<!-- diubah lagi -->\n", encoding="utf-8")
    hosts = olab.host_tree()

    result = olab.cli("restore", str(archive), "--yes")

    assert result.exit_code == 1
    assert "differ from the archive" in result.stderr and "index.html" in result.stderr
    assert olab.host_tree() == hosts


def test_offboard_killed_at_every_step_finishes_and_loses_nothing(olab: FaultLab):
    site_dir, vhost, cert_dir = paths(olab, NEIGHBOUR)
    before = file_states(site_dir)
    fqdn = olab.agency(NEIGHBOUR).fqdn
    archives = olab.lab.state_dir / "archives"

    for step in ("archive:", "dns:", "vhost:", "site:", "cert:"):  # each run dies one later
        olab.kill_after(step, "offboard", NEIGHBOUR, "--yes")
        olab.nginx_config_ok()
    code, out = olab.json("offboard", NEIGHBOUR, "--yes")

    assert code == 0, out
    [archive] = archiving.find_archives(archives, NEIGHBOUR)  # every re-run reused the first
    held = archiving.load_archive(archive).site_files()
    assert {rel: (f.sha256, f.mode) for rel, f in held.items()} == before
    assert not site_dir.exists() and not vhost.exists() and not cert_dir.exists()
    assert olab.records_at("ns1", fqdn) == {} and olab.owned_orphans() == []
    assert olab.agency(NEIGHBOUR).offboarded
    olab.vhosts_complete()
    code, out = olab.json("offboard", NEIGHBOUR, "--dry-run")
    assert code == 0 and not any(c["action"] in ("create", "update", "delete")
                                 for c in out["plan"]["changes"])


def test_vhost_that_nginx_needs_is_put_back_and_nothing_after_it_runs(olab: FaultLab):
    inventory = olab.inventory
    agency = inventory.agencies["bpbd"]
    host = inventory.hosts[agency.host]
    site_dir, vhost, cert_dir = paths(olab, "bpbd")
    hand_made = host.nginx_sites_dir / "zz-tangan.conf"  # someone's file that needs bpbd's
    hand_made.write_text(f"include {vhost};\n")
    try:
        code, out = olab.json("offboard", "bpbd", "--yes")

        assert code == 1
        outcome = {o["kind"]: o for o in out["result"]["outcomes"]}
        assert outcome["vhost"]["status"] == "failed"
        assert "put back" in outcome["vhost"]["detail"]
        assert out["result"]["not_run"] == ["site", "cert", "registry"]
        assert vhost.exists() and site_dir.exists() and cert_dir.exists()
        olab.nginx_config_ok()
    finally:
        hand_made.unlink()
    code, out = olab.json("offboard", "bpbd", "--yes")
    assert code == 0, out["result"]
    assert not vhost.exists() and not site_dir.exists()


def test_nothing_printed_or_logged_holds_a_secret(olab: FaultLab, tmp_path: Path):
    assert olab.leaks(tmp_path) == []
    for archive in (olab.lab.state_dir / "archives").glob("*.tar.gz"):
        held = archiving.load_archive(archive)
        assert not any(b"PRIVATE KEY" in data for data in held.files.values())


def test_a_setuid_file_in_a_site_never_comes_back_setuid(olab: FaultLab):
    """An agency-owned program of mode 4755 (in a setgid folder), offboarded and restored
    by root: the archive records, and the restore sets, plain 0644 and 0755."""
    # dinkes is live again (restored above; setda stays offboarded).
    site_dir, _vhost, _cert = paths(olab, SLUG)
    tool = site_dir / "unduh" / "alat"
    tool.parent.mkdir()
    tool.parent.chmod(0o2775)
    tool.write_bytes(b"#!/bin/sh\nid\n")
    tool.chmod(0o4755)
    os.chown(tool, 65534, 65534)  # the agency's content user

    code, out = olab.json("offboard", SLUG, "--yes")
    assert code == 0, out["result"]
    archive = Path(out["result"]["archive"])
    manifest = archiving.load_archive(archive).manifest
    assert manifest["files"]["unduh/alat"]["mode"] == 0o644
    assert manifest["dirs"]["unduh"] == 0o755
    code, out = olab.json("restore", str(archive), "--yes")

    assert code == 0, out["result"]
    assert stat.S_IMODE(tool.stat().st_mode) == 0o644
    assert stat.S_IMODE(tool.parent.stat().st_mode) == 0o755
    assert tool.stat().st_uid in (0, 65534) and tool.read_bytes() == b"#!/bin/sh\nid\n"
