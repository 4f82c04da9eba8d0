"""`provisioner doctor` on a real lab, and the ACME rate-limit ledger against Pebble.

Everything passes on a healthy lab; each test then breaks one thing for real (a wrong
TSIG key file, TLS 1.0 in nginx's main config, an unknown host key, a stopped nginx
or Pebble, a CAA record for another CA, a nameserver that does not answer) and sees
the check named. The module brings up its own lab (offset 175 inside
PROVISIONER_TEST_NET), since it stops servers and edits the zone and host configs.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.rrset
import pytest
import yaml

from provisioner.dns.client import DnsClient, Operation, UpdateBatch
from provisioner.doctor.checks import parent_check
from provisioner.doctor.dns import delegated_names
from provisioner.registry.models import LETS_ENCRYPT_LIMITS, Nameserver
from provisioner.tls import ratelimit
from provisioner.tls.acme import AcmeAccount, key_pem, new_private_key
from tests import hostile_dns

from .conftest import TEST_NET, run_cli
from .faultkit import FaultLab, onboarded_lab

OFFSET = 175
BASE = ("dinkes",)  # onboarded once: the ACME account exists


@pytest.fixture(scope="module")
def dlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    with onboarded_lab(tmp_path_factory.mktemp("doctor"), OFFSET, BASE) as fault_lab:
        yield fault_lab


def doctor(dlab: FaultLab, inventory_dir: Path | None = None
           ) -> tuple[int, dict[tuple[str, str], dict]]:
    """Exit code and the checks by (id, target)."""
    result = run_cli(inventory_dir or dlab.lab.inventory_dir, dlab.lab.state_dir, "doctor",
                     "--format", "json")
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    checks = {(c["id"], c["target"]): c for c in report["checks"]}
    assert len(checks) == len(report["checks"])
    assert report["failed"] is (result.exit_code == 1)
    return result.exit_code, checks


def statuses(checks: dict, status: str) -> set[tuple[str, str]]:
    return {key for key, check in checks.items() if check["status"] == status}


def inventory_copy(dlab: FaultLab, tmp_path: Path, **settings: Any) -> Path:
    """The lab's inventory with some group_vars changed (the lab and state are shared)."""
    copy = tmp_path / "inventory"
    shutil.copytree(dlab.lab.inventory_dir, copy)
    path = copy / "group_vars" / "all.yml"
    data = yaml.safe_load(path.read_text())
    data.update(settings)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# =========================================================================== healthy


def test_everything_passes_on_the_lab(dlab: FaultLab):
    code, checks = doctor(dlab)
    assert code == 0
    assert statuses(checks, "fail") == set() and statuses(checks, "warn") == set(), checks
    hosts = dlab.inventory.hosts
    for name, host in hosts.items():
        for check_id in ("ssh", "ports", "nginx", "nginx_tls_protocols",
                         "nginx_server_tokens", "disk", "clock"):
            assert checks[(check_id, name)]["status"] == "pass", checks[(check_id, name)]
        assert checks[("sudo", name)]["status"] == ("skip" if host.ssh_user == "root"
                                                    else "pass")
    assert any(h.ssh_user != "root" for h in hosts.values()), "no sudo host in the lab"
    zone = dlab.inventory.settings.zone
    for check_id in ("dns_serials", "dns_ns_set", "dns_caa"):
        assert checks[(check_id, zone)]["status"] == "pass"
    assert checks[("dns_parent_ns", zone)]["status"] == "skip"
    assert "not delegated" in checks[("dns_parent_ns", zone)]["detail"]
    by_id = {check_id: c for (check_id, _t), c in checks.items()}
    for check_id in ("dns_tsig", "dns_axfr", "dns_authoritative", "acme_directory",
                     "acme_account", "acme_environment"):
        assert by_id[check_id]["status"] == "pass", by_id[check_id]
    assert "NXRRSET" in by_id["dns_tsig"]["detail"]


def test_the_table_names_every_check(dlab: FaultLab):
    result = dlab.cli("doctor")
    assert result.exit_code == 0
    for check_id in ("ssh", "ports", "dns_tsig", "dns_axfr", "clock"):
        assert check_id in result.stdout
    assert "0 fail" in result.stdout


# =========================================================================== broken, one by one


def test_a_wrong_tsig_key_fails_the_tsig_and_transfer_checks_and_changes_nothing(
        dlab: FaultLab, tmp_path: Path):
    settings = dlab.inventory.settings
    real = settings.tsig_key_file.read_text()
    name = real.split('"')[1]
    wrong = private_file(tmp_path / "wrong.key", 'key "%s" { algorithm hmac-sha256; secret '
                                                 '"%s"; };\n' % (name, "A" * 43 + "="))
    serial = DnsClient(settings).soa_serial()
    code, checks = doctor(dlab, inventory_copy(dlab, tmp_path, tsig_key_file=str(wrong)))
    assert code == 1
    failed = {check_id for check_id, _target in statuses(checks, "fail")}
    assert failed == {"dns_tsig", "dns_axfr"}, failed
    tsig = next(c for (i, _t), c in checks.items() if i == "dns_tsig")
    assert "BADSIG" in tsig["detail"] and tsig["hint"]
    assert DnsClient(settings).soa_serial() == serial


def test_tls1_and_server_tokens_in_the_main_config_are_named(dlab: FaultLab):
    host = dlab.inventory.hosts["web1"]
    config = dlab.lab.lab.local(host, host.nginx_main_config)
    original = config.read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in original and "server_tokens off;" in original
    config.write_text(original.replace("ssl_protocols TLSv1.2 TLSv1.3;",
                                       "ssl_protocols TLSv1 TLSv1.2;")
                      .replace("server_tokens off;", "server_tokens on;"))
    try:
        code, checks = doctor(dlab)
    finally:
        config.write_text(original)
    assert code == 1
    assert statuses(checks, "fail") == {("nginx_tls_protocols", "web1")}
    assert "TLSv1" in checks[("nginx_tls_protocols", "web1")]["detail"]
    assert checks[("nginx_tls_protocols", "web1")]["hint"]
    assert statuses(checks, "warn") == {("nginx_server_tokens", "web1")}
    assert checks[("nginx", "web1")]["status"] == "pass"  # nginx -t has nothing against it
    assert checks[("nginx_tls_protocols", "web2")]["status"] == "pass"


def test_an_unknown_host_key_fails_ssh_and_skips_the_rest(dlab: FaultLab, tmp_path: Path):
    empty = private_file(tmp_path / "known_hosts", "")
    code, checks = doctor(dlab, inventory_copy(dlab, tmp_path, known_hosts_file=str(empty)))
    assert code == 1
    for name in dlab.inventory.hosts:
        assert checks[("ssh", name)]["status"] == "fail"
        assert "unknown" in checks[("ssh", name)]["detail"]
        assert checks[("nginx", name)]["status"] == "skip"
        assert checks[("ports", name)]["status"] == "pass"
    assert {i for i, _t in statuses(checks, "fail")} == {"ssh"}


def test_sudo_asking_for_a_password_fails_the_sudo_check(dlab: FaultLab):
    [host] = [h for h in dlab.inventory.hosts.values() if h.ssh_user != "root"]
    drop_in = dlab.lab.lab.local(host, Path("/etc/sudoers.d/provisioner-lab"))
    original = drop_in.read_bytes()
    drop_in.write_text(f"{host.ssh_user} ALL=(ALL:ALL) ALL\n")  # a password is required
    try:
        code, checks = doctor(dlab)
    finally:
        drop_in.write_bytes(original)
    assert code == 1
    assert statuses(checks, "fail") == {("sudo", host.name)}
    assert "password" in checks[("sudo", host.name)]["detail"] + \
        checks[("sudo", host.name)]["hint"]
    assert checks[("nginx", host.name)]["status"] == "skip"
    assert checks[("ssh", host.name)]["status"] == "pass"


def test_a_stopped_nginx_fails_the_ports_check_of_its_host(dlab: FaultLab):
    with dlab.stopped("web2-nginx"):
        code, checks = doctor(dlab)
    assert code == 1
    assert statuses(checks, "fail") == {("ports", "web2")}
    assert "127." in checks[("ports", "web2")]["detail"]


def test_caa_for_another_ca_fails_when_the_ca_is_known(dlab: FaultLab, tmp_path: Path):
    settings = dlab.inventory.settings
    client = DnsClient(settings)
    zone = settings.zone

    def caa(*values: str) -> None:
        operation = Operation("replace", zone, "CAA", 300, values) if values else \
            Operation("delete", zone, "CAA")
        client.update(UpdateBatch(zone, (), (operation,)))
        client.wait_for_propagation([], client.soa_serial())

    with_identity = inventory_copy(dlab, tmp_path, acme_caa_identity="letsencrypt.org")
    caa('0 issue "sectigo.com"')
    try:
        code, checks = doctor(dlab, with_identity)
        assert code == 1 and statuses(checks, "fail") == {("dns_caa", zone)}
        assert "sectigo.com" in checks[("dns_caa", zone)]["detail"]
        assert 'CAA 0 issue "letsencrypt.org"' in checks[("dns_caa", zone)]["hint"]
        _code, lab_checks = doctor(dlab)  # Pebble: no CAA identity to compare
        assert lab_checks[("dns_caa", zone)]["status"] == "warn"
        caa('0 issue "letsencrypt.org"', '0 iodef "mailto:dkisp@paserkab.go.id"')
        code, checks = doctor(dlab, with_identity)
        assert checks[("dns_caa", zone)]["status"] == "pass"
    finally:
        caa()


def test_a_nameserver_that_does_not_answer_is_named(dlab: FaultLab, tmp_path: Path):
    settings = dlab.inventory.settings
    silent = f"{TEST_NET}.{OFFSET + 29}"  # inside this lab's range, nothing listens there
    nameservers = [{"name": ns.name, "address": ns.address, "port": ns.port}
                   for ns in settings.nameservers]
    nameservers.append({"name": f"ns3.{settings.zone}", "address": silent, "port": 53})
    code, checks = doctor(dlab, inventory_copy(dlab, tmp_path, nameservers=nameservers))
    assert code == 1
    assert statuses(checks, "fail") == {("dns_authoritative", f"ns3.{settings.zone}"),
                                        ("dns_serials", settings.zone),
                                        ("dns_ns_set", settings.zone)}
    assert checks[("dns_authoritative", f"ns1.{settings.zone}")]["status"] == "pass"


def test_an_account_key_the_ca_does_not_know_is_a_warning(dlab: FaultLab):
    key_file = AcmeAccount(dlab.inventory.settings, dlab.lab.state_dir).key_file
    original = key_file.read_bytes()
    key_file.write_bytes(key_pem(new_private_key()))
    try:
        code, checks = doctor(dlab)
    finally:
        key_file.write_bytes(original)
    assert code == 0
    account = next(c for (i, _t), c in checks.items() if i == "acme_account")
    assert account["status"] == "warn" and "does not know" in account["detail"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_dns_checks_pass_on_powerdns_and_name_a_missing_axfr_permission(
        dlab: FaultLab, tmp_path: Path):
    """The lab's PowerDNS primary: the key accepted, the signed transfer allowed; without
    TSIG-ALLOW-AXFR the transfer check fails and names it."""
    pdns = dlab.lab.lab.pdns_settings().primary
    server = {"name": pdns.name, "address": pdns.address, "port": pdns.port}
    inventory = inventory_copy(dlab, tmp_path, dns_primary=server, nameservers=[dict(server)])
    code, checks = doctor(dlab, inventory)
    dns_checks = {key: c for key, c in checks.items() if key[0].startswith("dns_")}
    assert code == 0
    assert {c["status"] for key, c in dns_checks.items() if key[0] != "dns_parent_ns"} == \
        {"pass"}, dns_checks
    zone = dlab.inventory.settings.zone
    key_name = dlab.inventory.settings.tsig_key_file.read_text().split('"')[1]
    dlab.lab.lab.pdnsutil("set-meta", zone, "TSIG-ALLOW-AXFR")  # no value: removed
    try:
        code, checks = doctor(dlab, inventory)
    finally:
        dlab.lab.lab.pdnsutil("set-meta", zone, "TSIG-ALLOW-AXFR", key_name)
    assert code == 1
    assert {i for i, _t in statuses(checks, "fail")} == {"dns_axfr"}
    axfr = next(c for (i, _t), c in checks.items() if i == "dns_axfr")
    assert "TSIG-ALLOW-AXFR" in axfr["hint"]


# =========================================================================== the parent


def referral(*targets: str) -> hostile_dns.Behaviour:
    """What a parent server says of a child zone: its NS records as authority, no AA."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        reply = dns.message.make_response(query)
        reply.flags &= ~dns.flags.AA
        reply.authority.append(dns.rrset.from_text(query.question[0].name, 3600, "IN", "NS",
                                                   *targets))
        return [reply.to_wire()]
    return behave


@pytest.mark.parametrize("behaviour,status", [
    (referral("ns1.paserkab.go.id.", "ns2.paserkab.go.id."), "pass"),
    (referral("ns1.paserkab.go.id.", "ns.old-isp.example."), "fail"),
    (hostile_dns.records("NS ns1.paserkab.go.id.", "NS ns2.paserkab.go.id."), "pass"),
    (hostile_dns.silent, "skip"),
    (hostile_dns.rcode("REFUSED", authoritative=False), "skip"),
])
def test_the_parents_delegation_is_read_from_a_real_server(behaviour, status):
    with hostile_dns.start("127.0.0.1", 0) as parent:
        parent.add("paserkab.go.id", behaviour)
        server = Nameserver("ns.go.id", parent.address, parent.port)
        found = delegated_names("paserkab.go.id", [server], timeout=0.5)
    check = parent_check("paserkab.go.id", ["ns1.paserkab.go.id", "ns2.paserkab.go.id"], found,
                         "go.id")
    assert check.status == status, check


# =========================================================================== rate-limit ledger


def test_a_full_week_onboards_one_agency_of_two_and_names_the_other_with_its_date(
        dlab: FaultLab, tmp_path: Path):
    """Let's Encrypt's limits (the default) with 49 of 50 certificates of the registered
    domain used this week: one of two new agencies gets its certificate, the other is
    left for a later run with the time the oldest certificate leaves the week."""
    settings = dlab.inventory.settings
    inventory = inventory_copy(dlab, tmp_path)
    data = yaml.safe_load((inventory / "group_vars" / "all.yml").read_text())
    del data["acme_rate_limits"]  # Let's Encrypt's
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    state = dlab.lab.state_dir
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    used = ratelimit.Ledger(state, settings.acme.directory, LETS_ENCRYPT_LIMITS).budget(
        [ratelimit.Demand("x", (settings.zone,), settings.acme.directory)]).usage[0].used
    oldest = now - dt.timedelta(hours=100)
    prefill = ratelimit.Ledger(state, settings.acme.directory, LETS_ENCRYPT_LIMITS,
                               clock=lambda: oldest)
    for _ in range(49 - used):
        prefill.record_certificate((f"old.{settings.zone}",))

    plan = run_cli(inventory, state, "plan", "setda", "kesbangpol")
    assert plan.exit_code == 0, plan.stderr
    assert f"certificates per registered domain ({settings.zone}): 49 used + 1 this run of " \
           f"50 per 7 days" in plan.stdout
    fits = oldest + dt.timedelta(hours=168)
    assert "kesbangpol: left for a later run" in plan.stdout
    assert f"fits after {fits:%Y-%m-%d %H:%M} UTC" in plan.stdout

    result = run_cli(inventory, state, "onboard", "setda", "kesbangpol", "--yes",
                     "--format", "json")
    out = json.loads(result.stdout)
    assert result.exit_code == 1
    tls_outcomes = {o["agency"]: o for o in out["outcomes"] if o["kind"] == "tls"}
    assert tls_outcomes["setda"]["status"] == "changed"
    assert tls_outcomes["kesbangpol"]["status"] == "failed"
    assert f"fits after {fits:%Y-%m-%d %H:%M} UTC" in tls_outcomes["kesbangpol"]["detail"]
    deferred = out["plan"]["rate_limits"]["deferred"]["kesbangpol"]
    assert deferred["fits_at"] == fits.isoformat(timespec="seconds")
    after = ratelimit.Ledger(state, settings.acme.directory, LETS_ENCRYPT_LIMITS)
    certificates = [e for e in after.events if e.kind == ratelimit.CERTIFICATES]
    assert len([e for e in certificates if e.at > oldest]) == used + 1
    ledger_file = ratelimit.ledger_path(state)
    assert stat.S_IMODE(ledger_file.stat().st_mode) == 0o600

    again = run_cli(inventory, state, "plan", "kesbangpol")
    assert "kesbangpol: left for a later run" in again.stdout  # still full: never past it
    renew = run_cli(inventory, state, "renew", "kesbangpol", "--dry-run")
    assert renew.exit_code == 0
    row = next(line for line in renew.stdout.splitlines() if "kesbangpol" in line
               and "│" in line)
    assert "later" in row


# =========================================================================== last: Pebble


def test_a_stopped_pebble_fails_the_acme_directory_check(dlab: FaultLab):
    with dlab.stopped("acme"):
        code, checks = doctor(dlab)
    assert code == 1
    failed = statuses(checks, "fail")
    assert {i for i, _t in failed} == {"acme_directory"}, failed
    account = next(c for (i, _t), c in checks.items() if i == "acme_account")
    assert account["status"] == "skip"
