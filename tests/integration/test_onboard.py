"""Onboarding end to end on a real lab: DNS, Ansible, ACME (Pebble), verification.

The module brings up its own lab (offset 50 inside PROVISIONER_TEST_NET) because it
onboards the whole sample inventory and resets the lab between scenarios. Tests run
in file order and build on each other's state where they say so.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from provisioner.hosts import ansible, deploy
from provisioner.registry.load import load_inventory
from provisioner.site import render as site

from .conftest import TEST_NET, TestLab, run_cli, start_test_lab


@pytest.fixture(scope="module")
def olab(tmp_path_factory: pytest.TempPathFactory):
    test_lab = start_test_lab(tmp_path_factory.mktemp("onboard"), TEST_NET, offset=50)
    try:
        yield test_lab
    finally:
        test_lab.lab.down()


def cli(olab: TestLab, *args: str):
    return run_cli(olab.inventory_dir, olab.state_dir, *args, subprocess=True)


def onboard_json(olab: TestLab, *args: str) -> tuple[int, dict]:
    result = cli(olab, "onboard", *args, "--yes", "--format", "json")
    assert result.stdout.strip(), result.stderr
    return result.exit_code, json.loads(result.stdout)


def trust_context(olab: TestLab) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(olab.inventory.settings.trust_roots[0]))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def fetch(olab: TestLab, slug: str, path: str = "/") -> tuple[int, str, x509.Certificate]:
    """GET https://<agency>/path from its host's address, verifying the chain to Pebble."""
    agency = olab.inventory.agencies[slug]
    address = olab.inventory.hosts[agency.host].public_ipv4
    context = trust_context(olab)
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=agency.fqdn) as tls:
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        conn = http.client.HTTPConnection(agency.fqdn)
        conn.sock = tls
        conn.request("GET", path, headers={"Host": agency.fqdn})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace"), cert


def nginx_workers(olab: TestLab) -> dict[str, set[int]]:
    """Worker PIDs per host: a reload replaces them, so equal sets mean no reload."""
    workers = {}
    for spec in olab.lab.servers():
        if not spec.name.endswith("-nginx"):
            continue
        master = olab.lab.running_pid(spec)
        host = olab.inventory.hosts[spec.name.removesuffix("-nginx")]
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        workers[host.name] = {int(pid) for pid in children}
    return workers


@pytest.mark.parametrize("slug", ["dinkes", "dpupr"])  # web1 (root), web3 (sudo user)
def test_one_agency_from_nothing_to_https(olab: TestLab, slug: str):
    agency = olab.inventory.agencies[slug]
    code, out = onboard_json(olab, slug)

    assert code == 0, out
    assert out["agencies"][slug]["status"] == "changed"
    steps = {o["kind"]: o["status"] for o in out["outcomes"] if o["agency"] == slug}
    assert steps == {"dns": "changed", "web": "changed", "tls": "changed", "verify": "ok"}
    status, body, cert = fetch(olab, slug)
    assert status == 200 and agency.name in body
    assert cert.subject.rfc4514_string() or cert.extensions  # chain verified by the context
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [agency.fqdn]
    tls13 = trust_context(olab)
    tls13.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection((olab.inventory.hosts[agency.host].public_ipv4, 443),
                                  timeout=5) as raw, \
            tls13.wrap_socket(raw, server_hostname=agency.fqdn) as conn:
        assert conn.version() == "TLSv1.3"
    service = agency.services[0]
    status, page, _ = fetch(olab, slug, "/" + site.service_path(service))
    assert status == 200
    for heading in ("Persyaratan", "Jangka Waktu Penyelesaian", "Biaya/Tarif", "Produk Pelayanan"):
        assert heading in page


def test_every_change_is_in_the_audit_log(olab: TestLab):
    audit = json.loads(cli(olab, "history", "--audit", "--agency", "dinkes", "--format",
                           "json").stdout)

    kinds = {(e["kind"], e["action"], e["result"]) for e in audit}
    assert {("dns", "create", "changed"), ("site", "create", "changed"),
            ("vhost", "create", "changed"), ("cert", "create", "changed")} <= kinds
    assert all(e["command"].startswith("provisioner ") and e["operator"] for e in audit)
    secret = olab.inventory.settings.tsig_key_file.read_text().split('secret "')[1].split('"')[0]
    assert secret not in (olab.state_dir / "audit.jsonl").read_text()


def test_whole_sample_in_one_run(olab: TestLab):
    code, out = onboard_json(olab, "--all", "--timings")

    assert code == 0, [o for o in out["outcomes"] if o["status"] == "failed"]
    agencies = olab.inventory.agencies
    assert len(out["agencies"]) == len(agencies) >= 30
    assert {a.host for a in agencies.values()} == {"web1", "web2", "web3"}
    assert all(o["status"] in ("changed", "ok") for o in out["agencies"].values())
    # First onboarding: the HTTP vhost (for the ACME challenge), then the HTTPS one.
    assert set(out["reloads"]) == {"web1", "web2", "web3"} and max(out["reloads"].values()) <= 2
    assert set(out["timings"]) >= {"plan", "dns", "web", "tls", "verify"}
    for slug in ("setda", "disdukcapil", "kec-muara-samu", "kec-tanah-grogot"):
        status, body, _ = fetch(olab, slug)
        assert status == 200 and agencies[slug].name in body


def test_rerun_changes_nothing_and_reloads_nothing(olab: TestLab):
    before = nginx_workers(olab)

    code, out = onboard_json(olab, "--all")

    assert code == 0
    assert {o["status"] for o in out["agencies"].values()} == {"ok"}
    assert out["plan"]["counts"]["create"] == out["plan"]["counts"]["update"] == 0
    assert sum(out["reloads"].values()) == 0
    assert nginx_workers(olab) == before


def test_two_runs_at_once_one_waits_for_the_lock(olab: TestLab):
    argv = [sys.executable, "-m", "provisioner", "--inventory", str(olab.inventory_dir),
            "--state-dir", str(olab.state_dir), "onboard", "--all", "--yes"]
    olab.lab.reset()  # a full onboarding: the first run holds the lock for seconds
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first.stdout.readline()  # the plan is printed: the lock is taken before planning
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    _out, first_err = first.communicate(timeout=300)

    assert first.returncode == 0, first_err
    assert second.returncode == 1
    assert "locked by" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr


def test_renew_everything_serves_new_serials_with_one_reload_per_host(olab: TestLab):
    before = {slug: fetch(olab, slug)[2].serial_number for slug in olab.inventory.agencies}

    result = cli(olab, "renew", "--all", "--days", "9999", "--format", "json")

    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)["result"]
    assert {o["status"] for o in out["agencies"].values()} == {"changed"}
    assert out["reloads"] == {"web1": 1, "web2": 1, "web3": 1}
    after = {slug: fetch(olab, slug)[2].serial_number for slug in olab.inventory.agencies}
    assert all(after[slug] != before[slug] for slug in before)


@pytest.mark.parametrize("slug", ["dkisp", "dpmd"])  # web1, web3
def test_plan_lists_an_edited_page_and_onboard_keeps_it(olab: TestLab, slug: str):
    agency = olab.inventory.agencies[slug]
    host = olab.inventory.hosts[agency.host]
    page = olab.lab.local(host, site.site_dir(agency, host) / "index.html")
    page.write_text(page.read_text(encoding="utf-8").replace("</main>", "<p>Berita DKISP</p></main>"),
                    encoding="utf-8")

    plan = json.loads(cli(olab, "plan", slug, "--format", "json").stdout)
    code, _out = onboard_json(olab, slug)

    site_rows = [c for c in plan["changes"] if c["kind"] == "site"]
    assert "index.html" in site_rows[0]["reason"]
    assert code == 0
    assert "Berita DKISP" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("pair", [("dinsos", "dishub"), ("dpmd", "dpupr")])  # web1, web3
def test_broken_vhost_for_one_agency_leaves_every_other_site_serving(olab: TestLab, pair):
    inventory = olab.inventory
    broken, changed = inventory.agencies[pair[0]], inventory.agencies[pair[1]]
    assert broken.host == changed.host
    host = inventory.hosts[broken.host]
    broken_vhost = olab.lab.local(host, site.vhost_path(broken, host))
    changed_vhost = olab.lab.local(host, site.vhost_path(changed, host))
    old_broken = broken_vhost.read_bytes()
    bystanders = [a.slug for a in inventory.agencies.values() if a.slug != broken.slug][:12]
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for slug in bystanders:
                try:
                    status, _body, _cert = fetch(olab, slug)
                    if status != 200:
                        failures.append(f"{slug}: {status}")
                except (OSError, ssl.SSLError) as exc:
                    failures.append(f"{slug}: {exc}")

    bad = deploy.site_bundle(broken, inventory, tls_ready=True)
    bad = deploy.SiteBundle(bad.slug, bad.host, bad.site_dir, bad.vhost_path,
                            bad.vhost.replace(b"server_name", b"server_nme", 1), bad.files)
    good = deploy.site_bundle(changed, inventory, tls_ready=True)
    good = deploy.SiteBundle(good.slug, good.host, good.site_dir, good.vhost_path,
                             good.vhost + b"# reviewed\n", good.files)
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        report = deploy.deploy_sites(inventory, [bad, good])
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()

    assert failures == []
    assert report.agencies[broken.slug].status == "failed"
    assert "nginx" in report.agencies[broken.slug].reason
    assert report.agencies[changed.slug].status == "changed"
    assert broken_vhost.read_bytes() == old_broken
    assert changed_vhost.read_bytes().endswith(b"# reviewed\n")
    rejected = report.agencies[broken.slug].rejected_file
    assert rejected and olab.lab.local(host, Path(rejected)).exists()
    assert fetch(olab, broken.slug)[0] == 200
    # The next onboarding puts the inventory's vhost back for the changed agency.
    code, out = onboard_json(olab, changed.slug)
    assert code == 0 and out["agencies"][changed.slug]["status"] == "changed"


def test_killed_midway_then_rerun_converges(olab: TestLab):
    olab.lab.reset()
    argv = [sys.executable, "-m", "provisioner", "--inventory", str(olab.inventory_dir),
            "--state-dir", str(olab.state_dir), "onboard", "--all", "--yes"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "web:" not in seen and time.monotonic() < deadline:  # killed after the first deploy
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert "web:" in seen, seen
    deadline = time.monotonic() + 60  # a playbook it had started runs on: the next run waits
    while ansible.running_playbooks(olab.inventory) and time.monotonic() < deadline:
        time.sleep(0.1)

    code, out = onboard_json(olab, "--all")
    assert code == 0, [o for o in out["outcomes"] if o["status"] == "failed"]
    code, out = onboard_json(olab, "--all")
    assert code == 0 and {o["status"] for o in out["agencies"].values()} == {"ok"}
    assert sum(out["reloads"].values()) == 0
    for host in olab.lab.hosts:
        done = subprocess.run(olab.lab.on_host(host, (host.nginx_binary, "-t", "-c",
                                                      str(host.nginx_main_config))),
                              capture_output=True)
        assert done.returncode == 0, done.stderr


def test_ctrl_c_in_a_later_step_keeps_the_audit_records_of_the_steps_before(olab: TestLab):
    olab.lab.reset()
    audit = olab.state_dir / "audit.jsonl"
    known = audit.read_text(encoding="utf-8").count("\n") if audit.exists() else 0
    argv = [sys.executable, "-m", "provisioner", "--inventory", str(olab.inventory_dir),
            "--state-dir", str(olab.state_dir), "onboard", "dinkes", "--yes"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "tls:" not in seen and time.monotonic() < deadline:  # ordered; HTTPS vhost next
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert "tls:" in seen, seen
    assert process.returncode == 130, seen + rest  # interrupted before the end of the run

    entries = [json.loads(line) for line in
               audit.read_text(encoding="utf-8").splitlines()[known:]]
    done = {(e["kind"], e["result"]) for e in entries if e["agency"] == "dinkes"}
    assert {("dns", "changed"), ("site", "changed"), ("vhost", "changed")} <= done, entries
    # The certificate was ordered: recorded as done, or as interrupted (it may be done).
    cert = [e for e in entries if e["agency"] == "dinkes" and e["kind"] == "cert"]
    assert cert and all(e["result"] == "changed" or "interrupted" in e["reason"] for e in cert)
    code, out = onboard_json(olab, "dinkes")  # and a re-run converges
    assert code == 0, out["outcomes"]


def test_a_vhost_broken_by_hand_is_drift_that_onboarding_its_agency_repairs(olab: TestLab):
    # Builds on the test above: dinkes is onboarded on web1. One line of garbage appended
    # to its vhost broke 'nginx -t' for the whole host, and every run refused the host.
    agency = olab.inventory.agencies["dinkes"]
    host = olab.inventory.hosts[agency.host]
    conf = site.vhost_path(agency, host)
    written = conf.read_bytes()
    with conf.open("ab") as edit:
        edit.write(b"this line was typed by hand\n")
    neighbour = next(a.slug for a in olab.inventory.agencies.values()
                     if a.host == host.name and a.slug != "dinkes" and a.hosted)

    other = json.loads(cli(olab, "plan", neighbour, "--format", "json").stdout)
    plan = json.loads(cli(olab, "plan", "dinkes", "--format", "json").stdout)
    text = cli(olab, "plan", "dinkes").stdout
    code, out = onboard_json(olab, "dinkes")

    assert "'provisioner onboard dinkes' restores it" in other["host_errors"][host.name]
    assert plan["host_errors"] == {}
    assert "-this line was typed by hand" in plan["drift"]["dinkes"]
    [row] = [c for c in plan["changes"] if c["kind"] == "vhost"]
    assert row["action"] == "update" and "drift" in row["reason"]
    assert "drift" in text and "-this line was typed by hand" in text
    assert code == 0, out["outcomes"]
    assert conf.read_bytes() == written
    [kept] = (conf.parent.parent / "rejected").glob("dinkes.conf.drift-*")
    assert kept.read_bytes() == written + b"this line was typed by hand\n"
    web = next(o for o in out["outcomes"] if o["agency"] == "dinkes" and o["kind"] == "web")
    assert str(kept) in web["detail"]
    assert fetch(olab, "dinkes")[0] == 200
    code, out = onboard_json(olab, neighbour)
    assert code == 0, out["outcomes"]


def test_a_broken_file_the_toolkit_does_not_own_still_refuses_the_host(olab: TestLab):
    agency = olab.inventory.agencies["dinkes"]
    host = olab.inventory.hosts[agency.host]
    hand_made = site.vhost_path(agency, host).parent / "zz-tangan.conf"
    hand_made.write_bytes(b"this line was typed by hand\n")
    try:
        plan = json.loads(cli(olab, "plan", "dinkes", "--format", "json").stdout)
        code, out = onboard_json(olab, "dinkes")
    finally:
        hand_made.unlink()

    assert "zz-tangan.conf" in plan["host_errors"][host.name]
    assert "restores it" not in plan["host_errors"][host.name]
    assert code != 0 and out["agencies"]["dinkes"]["status"] == "failed"


def test_the_lab_nginx_never_follows_an_agency_symlink_to_another_users_file(olab: TestLab):
    # dinkes is onboarded (tests above); its content user is here uid 65534.
    agency = olab.inventory.agencies["dinkes"]
    site_dir = site.site_dir(agency, olab.inventory.hosts[agency.host])
    secret = olab.state_dir / "rahasia.txt"  # readable by the workers, owned by root
    secret.write_text("kata sandi basis data\n")
    secret.chmod(0o644)
    link, own = site_dir / "bocor.txt", site_dir / "milik-sendiri.txt"
    own.write_text("halaman biasa\n")
    os.chown(own, 65534, 65534)
    try:
        link.symlink_to(secret)
        os.lchown(link, 65534, 65534)
        refused = fetch(olab, "dinkes", "/bocor.txt")
        served = fetch(olab, "dinkes", "/milik-sendiri.txt")
    finally:
        link.unlink()
        own.unlink()

    assert refused[0] in (403, 404) and "kata sandi" not in refused[1]
    assert served[:2] == (200, "halaman biasa\n")


def test_a_manifest_edited_by_hand_fails_only_its_own_agency(olab: TestLab):
    # dinkes and its neighbours on web1 are onboarded (tests above).
    agency = olab.inventory.agencies["dinkes"]
    host = olab.inventory.hosts[agency.host]
    manifest = site.site_dir(agency, host) / site.MANIFEST_PATH
    good = manifest.read_bytes()
    document = json.loads(good)
    manifest.write_text(json.dumps({**document, "files": {**document["files"], "../x": "0" * 64}}))
    neighbours = [a.slug for a in olab.inventory.agencies.values()
                  if a.host == host.name and a.slug != "dinkes" and a.hosted][:2]
    try:
        plan = json.loads(cli(olab, "plan", "dinkes", *neighbours, "--format", "json").stdout)
        code, out = onboard_json(olab, "dinkes", *neighbours)
    finally:
        manifest.write_bytes(good)

    assert plan["host_errors"] == {}
    [row] = [c for c in plan["changes"] if c["agency"] == "dinkes" and c["kind"] == "site"]
    assert row["action"] == "conflict" and "'../x'" in row["reason"]
    assert code == 1 and out["agencies"]["dinkes"]["status"] == "failed"
    assert "'../x'" in out["agencies"]["dinkes"]["detail"]
    assert all(out["agencies"][slug]["status"] != "failed" for slug in neighbours)


def test_wildcard_mode(olab: TestLab):
    olab.lab.reset()
    settings_file = olab.inventory_dir / "group_vars/all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings_file.write_text(yaml.safe_dump({**settings, "tls_mode": "dns-01-wildcard"},
                                            sort_keys=False))
    olab.inventory = load_inventory(olab.inventory_dir, olab.state_dir)
    try:
        code, out = onboard_json(olab, "dinkes", "dkisp", "setda")
        assert code == 0, out["outcomes"]
        for slug in ("dinkes", "dkisp", "setda"):
            status, _body, cert = fetch(olab, slug)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert status == 200
            assert set(names.get_values_for_type(x509.DNSName)) == {"*.paserkab.go.id",
                                                                    "paserkab.go.id"}
        certs = {o["detail"] for o in out["outcomes"] if o["kind"] == "tls"}
        assert len(certs) == 1  # one certificate for every agency
        code, out = onboard_json(olab, "dinkes", "dkisp", "setda")
        assert code == 0 and {o["status"] for o in out["agencies"].values()} == {"ok"}
    finally:
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
        olab.inventory = load_inventory(olab.inventory_dir, olab.state_dir)
