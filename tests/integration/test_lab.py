"""The lab's servers work for real: DNS, SSH, nginx and ACME, plus up/down/reset.

Tests on the shared session ``lab`` clean up what they add (records, vhosts).
Tests that stop or wipe a lab use a scratch lab of their own on PREFIX.1XX, so
the session lab other tests rely on is never disturbed.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import httpx
import josepy as jose
import paramiko
import pytest
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioner.dns.tsig import load_tsig_key
from provisioner.errors import LabError
from provisioner.hosts.hostlib import process_cmdline
from provisioner.lab.control import Lab
from provisioner.lab.prepare import closed_ancestor
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Host

from .conftest import TEST_NET, TestLab, run_cli, start_test_lab

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


def web1(lab: TestLab) -> Host:
    return lab.inventory.hosts["web1"]


def web3(lab: TestLab) -> Host:
    """The production-shaped host: own mount namespace, Debian's paths, a sudo user."""
    return lab.inventory.hosts["web3"]


def run_on(lab: TestLab, host: Host, command: str) -> tuple[int, str, str]:
    """A command over SSH as the host's login user: (exit status, stdout, stderr)."""
    with ssh_client(lab, host=host) as ssh:
        _, stdout, stderr = ssh.exec_command(command, timeout=30)
        out, err = stdout.read().decode(), stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err


def worker_users(master: int) -> set[str]:
    """The users nginx's workers under ``master`` run as."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    uids = {Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
            for pid in children}
    return {pwd.getpwuid(int(uid)).pw_name for uid in uids}


def ns_addresses(lab: TestLab) -> tuple[str, str]:
    return lab.lab.lab.ns1, lab.lab.lab.ns2


def tsig(lab: TestLab) -> dns.tsig.Key:
    key = load_tsig_key(lab.inventory.settings.tsig_key_file)
    return dns.tsig.Key(key.name, key.secret, key.algorithm)


def query(address: str, name: str, rdtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), address, timeout=2)


def soa_serial(address: str, zone: str) -> int:
    response = query(address, zone, "SOA")
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    assert response.flags & dns.flags.AA, "answer is not authoritative"
    return response.answer[0][0].serial


def answers(address: str, name: str, rdtype: str) -> list[str]:
    response = query(address, name, rdtype)
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def update(lab: TestLab, *, signed: bool = True) -> dns.update.UpdateMessage:
    zone = lab.inventory.settings.zone
    if signed:
        return dns.update.UpdateMessage(zone, keyring=tsig(lab))
    return dns.update.UpdateMessage(zone)


def send(lab: TestLab, message: dns.update.UpdateMessage,
         server: str | None = None) -> dns.message.Message:
    return dns.query.tcp(message, server or lab.lab.lab.ns1, timeout=5)


def add_a_record(lab: TestLab, name: str, address: str, server: str | None = None) -> None:
    message = update(lab)
    message.replace(name + ".", 60, "A", address)
    assert send(lab, message, server).rcode() == dns.rcode.NOERROR


def delete_record(lab: TestLab, name: str) -> None:
    message = update(lab)
    message.delete(name + ".")
    send(lab, message)


def nginx_reload(lab: TestLab, host: Host) -> None:
    lab.lab.reload_nginx(host)


def http_get(address: str, host_header: str, path: str = "/", port: int = 80) -> httpx.Response:
    return httpx.get(f"http://{address}:{port}{path}", headers={"Host": host_header}, timeout=5)


def wait_for(check, timeout: float = 5.0, interval: float = 0.02):
    """Poll ``check`` until it returns a truthy value; return it (or the last falsy one)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def no_site(address: str, host_header: str) -> bool:
    """True when nginx closes the connection without an answer (the catch-all's 444)."""
    try:
        http_get(address, host_header)
    except httpx.RemoteProtocolError:
        return True
    return False


def served(address: str, host_header: str, path: str, expected: str) -> bool:
    try:
        response = http_get(address, host_header, path)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and expected in response.text


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- DNS


def test_ns1_and_ns2_serve_the_zone_with_the_same_serial(lab: TestLab):
    zone = lab.inventory.settings.zone
    ns1, ns2 = ns_addresses(lab)
    assert wait_for(lambda: soa_serial(ns1, zone) == soa_serial(ns2, zone), timeout=3)


def test_ns_records_and_recursion_off(lab: TestLab):
    zone = lab.inventory.settings.zone
    assert sorted(answers(lab.lab.lab.ns2, zone, "NS")) == [f"ns1.{zone}.", f"ns2.{zone}."]
    response = query(lab.lab.lab.ns1, "example.com", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.RA


def test_signed_update_on_ns1_reaches_ns2_within_a_second(lab: TestLab):
    zone = lab.inventory.settings.zone
    name = f"{unique('lab-update')}.{zone}"
    try:
        started = time.monotonic()
        add_a_record(lab, name, "192.0.2.7")
        seen = wait_for(lambda: answers(lab.lab.lab.ns2, name, "A") == ["192.0.2.7"], timeout=1.0)
        elapsed = time.monotonic() - started
        assert seen, f"ns2 did not have {name} within 1 s"
        assert answers(lab.lab.lab.ns1, name, "A") == ["192.0.2.7"]
        assert elapsed < 1.0
    finally:
        delete_record(lab, name)
    assert wait_for(lambda: answers(lab.lab.lab.ns2, name, "A") == [], timeout=2)


def test_unsigned_update_is_refused(lab: TestLab):
    name = f"{unique('lab-unsigned')}.{lab.inventory.settings.zone}"
    message = update(lab, signed=False)
    message.add(name + ".", 60, "A", "192.0.2.8")
    assert send(lab, message).rcode() == dns.rcode.REFUSED
    assert answers(lab.lab.lab.ns1, name, "A") == []


def test_update_signed_with_a_wrong_secret_is_refused(lab: TestLab):
    key = load_tsig_key(lab.inventory.settings.tsig_key_file)
    wrong = dns.tsig.Key(key.name, base64.b64encode(secrets.token_bytes(32)).decode(),
                         key.algorithm)
    name = f"{unique('lab-wrongkey')}.{lab.inventory.settings.zone}"
    message = dns.update.UpdateMessage(lab.inventory.settings.zone, keyring=wrong)
    message.add(name + ".", 60, "A", "192.0.2.9")
    with pytest.raises(dns.tsig.PeerBadSignature):
        send(lab, message)
    assert answers(lab.lab.lab.ns1, name, "A") == []


def test_zone_transfer_needs_the_key(lab: TestLab):
    zone = lab.inventory.settings.zone
    with pytest.raises(dns.xfr.TransferError):
        dns.zone.from_xfr(dns.query.xfr(lab.lab.lab.ns1, zone, timeout=5))
    signed = dns.zone.from_xfr(dns.query.xfr(lab.lab.lab.ns1, zone, keyring=tsig(lab), timeout=5))
    assert signed.get_rdataset("@", "SOA") is not None


def test_tsig_key_file_is_private_and_in_bind_format(lab: TestLab):
    path = lab.inventory.settings.tsig_key_file
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_tsig_key(path)
    assert key.algorithm == "hmac-sha256"
    checked = subprocess.run(["named-checkconf", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --------------------------------------------------------------------------- SSH


def ssh_client(lab: TestLab, known_hosts: Path | None = None,
               host: Host | None = None) -> paramiko.SSHClient:
    host = host or web1(lab)
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(str(known_hosts or lab.inventory.settings.known_hosts_file))
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(host.ssh_address, port=host.ssh_port, username=host.ssh_user,
                key_filename=str(host.ssh_key_file), look_for_keys=False, allow_agent=False,
                timeout=10)
    return ssh


def test_ssh_to_web1_with_the_lab_key_and_known_hosts(lab: TestLab):
    host = web1(lab)
    assert host.ssh_key_file.stat().st_mode & 0o777 == 0o600
    with ssh_client(lab) as ssh:
        _, stdout, _ = ssh.exec_command("id -un; echo ok")
        assert stdout.read().decode().split() == [host.ssh_user, "ok"]
        with ssh.open_sftp() as sftp:
            assert sftp.stat(str(host.web_root)) is not None


def test_ssh_refuses_an_unknown_host_key(lab: TestLab, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        ssh_client(lab, known_hosts=empty)


def test_openssh_client_accepts_the_known_hosts_file(lab: TestLab):
    host = web1(lab)
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(host.ssh_key_file), "-p", str(host.ssh_port),
         "-o", f"UserKnownHostsFile={lab.inventory.settings.known_hosts_file}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"{host.ssh_user}@{host.ssh_address}", "echo", "ok"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_ssh_password_login_is_off(lab: TestLab):
    host = web1(lab)
    transport = paramiko.Transport((host.ssh_address, host.ssh_port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as info:
            transport.auth_password(host.ssh_user, "wrong")
        assert "password" not in info.value.allowed_types
    finally:
        transport.close()


# --------------------------------------------------------------------------- web3


def test_web3_logs_in_only_as_deploy_who_becomes_root_without_a_password(lab: TestLab):
    host = web3(lab)
    assert host.ssh_user == "deploy"
    status, out, err = run_on(lab, host, "id -un; sudo -n id -un")
    assert status == 0, err
    assert out.split() == ["deploy", "root"]
    as_root = Host(**{**host.__dict__, "ssh_user": "root"})
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(lab, host=as_root)


def test_web3_runs_nginx_from_debians_paths_and_the_machine_keeps_its_own(lab: TestLab):
    host = web3(lab)
    machine_conf = Path("/etc/nginx/nginx.conf").read_bytes()
    status, out, err = run_on(lab, host, "sudo -n nginx -t 2>&1; cat /run/nginx.pid; "
                                         "ls /etc/nginx/sites-enabled /var/www/agencies "
                                         "/var/log/nginx/agencies /etc/nginx/tls >/dev/null "
                                         "&& echo paths-ok; grep -c 'provisioner lab' "
                                         "/etc/nginx/nginx.conf")
    assert status == 0, out + err
    lines = out.splitlines()
    assert "configuration file /etc/nginx/nginx.conf test is successful" in out
    master = int(lines[-3])
    assert "paths-ok" == lines[-2] and int(lines[-1]) == 1  # the lab's config, seen as /etc
    assert lab.lab.running_pid(next(s for s in lab.lab.servers()
                                    if s.name == "web3-nginx")) == master
    assert worker_users(master) == {"www-data"}
    assert os.readlink(f"/proc/{master}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert Path("/etc/nginx/nginx.conf").read_bytes() == machine_conf
    assert b"provisioner lab" not in machine_conf


def test_every_hosts_nginx_workers_run_unprivileged(lab: TestLab):
    for spec in lab.lab.servers():
        if spec.name.endswith("-nginx"):
            assert worker_users(lab.lab.running_pid(spec)) == {"www-data"}, spec.name
    # web1 serves from under a folder closed to www-data on this machine (the 0700 state
    # dir, or pytest's tmp root): the way is open only in its nginx's namespace.
    assert closed_ancestor(web1(lab).web_root, "www-data") is not None
    assert served_file_is_readable_by_workers(lab, web1(lab))


def served_file_is_readable_by_workers(lab: TestLab, host: Host) -> bool:
    name = f"{unique('lab-worker')}.{lab.inventory.settings.zone}"
    root = host.web_root / name
    conf = host.nginx_sites_dir / f"{name}.conf"
    root.mkdir(parents=True)
    (root / "index.html").write_text("readable\n")
    conf.write_text(f"server {{ listen {host.public_ipv4}:80; server_name {name}; "
                    f"root {root}; }}\n")
    try:
        nginx_reload(lab, host)
        return wait_for(lambda: served(host.public_ipv4, name, "/", "readable"))
    finally:
        conf.unlink()
        nginx_reload(lab, host)
        shutil.rmtree(root)


def test_a_vhost_written_on_web3_is_served_after_reload(lab: TestLab):
    host = web3(lab)
    name = f"{unique('lab-web3')}.{lab.inventory.settings.zone}"
    root = lab.lab.local(host, host.web_root / name)
    conf = lab.lab.local(host, host.nginx_sites_dir / f"{name}.conf")
    root.mkdir(parents=True)
    (root / "index.html").write_text(f"hello from {name}\n")
    conf.write_text(f"server {{\n  listen {host.public_ipv4}:80;\n  server_name {name};\n"
                    f"  root {host.web_root / name};\n}}\n")
    try:
        nginx_reload(lab, host)
        assert wait_for(lambda: served(host.public_ipv4, name, "/", f"hello from {name}"))
    finally:
        conf.unlink(missing_ok=True)
        nginx_reload(lab, host)
        (root / "index.html").unlink(missing_ok=True)
        root.rmdir()


# --------------------------------------------------------------------------- nginx


def test_throwaway_vhost_is_served_after_reload(lab: TestLab):
    host = web1(lab)
    name = f"{unique('lab-vhost')}.{lab.inventory.settings.zone}"
    root = host.web_root / name
    conf = host.nginx_sites_dir / f"{name}.conf"
    root.mkdir(parents=True)
    (root / "index.html").write_text(f"hello from {name}\n")
    conf.write_text(f"server {{\n  listen {host.public_ipv4}:80;\n  server_name {name};\n"
                    f"  root {root};\n}}\n")
    try:
        nginx_reload(lab, host)
        assert wait_for(lambda: served(host.public_ipv4, name, "/", f"hello from {name}")), \
            "the new vhost was not served after reload"
        # web2 never gets web1's site.
        assert no_site(lab.inventory.hosts["web2"].public_ipv4, name)
    finally:
        conf.unlink(missing_ok=True)
        nginx_reload(lab, host)
        (root / "index.html").unlink(missing_ok=True)
        root.rmdir()


def test_reload_with_a_broken_vhost_fails_and_keeps_serving(lab: TestLab):
    host = web1(lab)
    broken = host.nginx_sites_dir / f"{unique('lab-broken')}.conf"
    broken.write_text("server { this_is_not_a_directive; }\n")
    try:
        with pytest.raises(LabError, match="this_is_not_a_directive"):
            lab.lab.reload_nginx(host)
    finally:
        broken.unlink()
    assert {s.name: s.healthy for s in lab.lab.status()}["web1-nginx"]
    assert no_site(host.public_ipv4, "unknown.invalid")


def test_unknown_name_gets_no_site(lab: TestLab):
    host = web1(lab)
    with socket.create_connection((host.public_ipv4, 80), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: unknown.invalid\r\nConnection: close\r\n\r\n")
        assert sock.recv(1024) == b"", "nginx answered for an unknown name (expected 444)"


def test_unknown_name_gets_no_tls_handshake(lab: TestLab):
    host = web1(lab)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host.public_ipv4, 443), timeout=5) as sock:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(sock, server_hostname="unknown.invalid")


def test_nginx_listens_only_on_its_own_address(lab: TestLab):
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    for status in lab.lab.status():
        if status.name.endswith("-nginx"):
            host = lab.inventory.hosts[status.name.removesuffix("-nginx")]
            ours = {line.split()[3] for line in listening.splitlines()
                    if f"pid={status.pid}," in line}
            assert ours == {f"{host.public_ipv4}:80", f"{host.public_ipv4}:443"}


# --------------------------------------------------------------------------- ACME


def test_pebble_directory_answers_over_tls_with_the_lab_ca(lab: TestLab):
    settings = lab.inventory.settings
    context = ssl.create_default_context(cafile=str(settings.acme.ca_bundle))
    response = httpx.get(settings.acme.directory, verify=context, timeout=5)
    assert response.status_code == 200
    assert {"newNonce", "newAccount", "newOrder"} <= set(response.json())
    with pytest.raises(httpx.ConnectError):  # not trusted by the system store
        httpx.get(settings.acme.directory, timeout=5)


def test_trust_roots_hold_pebbles_current_root(lab: TestLab):
    settings = lab.inventory.settings
    context = ssl.create_default_context(cafile=str(settings.acme.ca_bundle))
    current = httpx.get(f"https://{lab.lab.lab.acme}:15000/roots/0", verify=context, timeout=5)
    roots = x509.load_pem_x509_certificates(settings.trust_roots[0].read_bytes())
    assert roots[0] == x509.load_pem_x509_certificate(current.content)


def test_acme_order_for_a_lab_name_completes(lab: TestLab):
    settings = lab.inventory.settings
    host = web1(lab)
    name = f"{unique('acme')}.{settings.zone}"
    conf = host.nginx_sites_dir / f"{name}.conf"
    conf.write_text(
        f"server {{\n  listen {host.public_ipv4}:80;\n  server_name {name};\n"
        f"  location /.well-known/acme-challenge/ {{\n    alias {host.acme_webroot}/;\n"
        f"    default_type text/plain;\n  }}\n}}\n")
    token_files: list[Path] = []
    try:
        add_a_record(lab, name, host.public_ipv4)
        nginx_reload(lab, host)
        probe = host.acme_webroot / "lab-probe"
        probe.write_text("ready")
        token_files.append(probe)
        assert wait_for(lambda: served(host.public_ipv4, name,
                                       "/.well-known/acme-challenge/lab-probe", "ready"))

        account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(account_key, alg=jose.ES256, user_agent="provisioner-tests",
                                   verify_ssl=str(settings.acme.ca_bundle))
        acme = client.ClientV2(client.ClientV2.get_directory(settings.acme.directory, net), net)
        acme.new_account(messages.NewRegistration.from_data(
            email=settings.acme.contact.removeprefix("mailto:"), terms_of_service_agreed=True))
        cert_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(cert_key, [name]))
        for authz in order.authorizations:
            challenge = next(c for c in authz.body.challenges
                             if isinstance(c.chall, challenges.HTTP01))
            response, validation = challenge.response_and_validation(account_key)
            token_file = host.acme_webroot / challenge.chall.encode("token")
            token_file.write_text(validation)
            token_files.append(token_file)
            acme.answer_challenge(challenge, response)
        done = acme.poll_and_finalize(
            order, deadline=datetime.datetime.now() + datetime.timedelta(seconds=60))

        leaf, intermediate = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[:2]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name]
        leaf.verify_directly_issued_by(intermediate)
        root = x509.load_pem_x509_certificates(settings.trust_roots[0].read_bytes())[0]
        intermediate.verify_directly_issued_by(root)
    finally:
        for path in (*token_files, conf):
            path.unlink(missing_ok=True)
        nginx_reload(lab, host)
        delete_record(lab, name)


# --------------------------------------------------------------------------- CLI on the session lab


def test_status_json_reports_every_server_healthy(lab: TestLab, cli):
    result = cli("lab", "status", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    names = {s["name"] for s in data["servers"]}
    assert names == {"ns1", "ns2", "pdns", "web1-sshd", "web2-sshd", "web3-sshd", "web1-nginx",
                     "web2-nginx", "web3-nginx", "acme"}
    assert all(s["healthy"] and s["running"] and s["pid"] for s in data["servers"])
    addresses = {s["address"].split(":")[0] for s in data["servers"]}
    assert all(a.startswith(lab.prefix + ".") for a in addresses)


def test_up_again_is_idempotent(lab: TestLab, cli):
    before = {s.name: s.pid for s in lab.lab.status()}
    result = cli("lab", "up", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert {s["action"] for s in data["servers"]} == {"already up"}
    assert {s["name"]: s["pid"] for s in data["servers"]} == before
    assert data["addresses_added"] == []


def test_up_takes_seconds(lab: TestLab):
    assert lab.up_report.seconds < 10, f"lab up took {lab.up_report.seconds} s"


def test_ansible_env_keeps_control_sockets_in_the_lab(lab: TestLab):
    env = lab.lab.ansible_env()
    control = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    assert control.is_dir() and control.is_relative_to(lab.inventory.settings.lab.dir)
    # Ansible names sockets with a 40-character hash: the path must fit a Unix socket.
    assert len(str(control)) + 41 < 108
    assert Path(lab.lab.ansible_vars()["ansible_remote_tmp"]).is_dir()


# --------------------------------------------------------------------------- a scratch lab


def lab_processes(lab_dir: Path) -> list[str]:
    """Live processes whose command line names a file of this lab."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = process_cmdline(int(entry.name))
            if cmdline and str(lab_dir) + "/" in cmdline and int(entry.name) != os.getpid():
                found.append(cmdline)
    return found


def in_namespace(namespace: str) -> list[int]:
    """Live processes in a mount namespace ("mnt:[N]")."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "mnt") == namespace \
                    and process_cmdline(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def lo_addresses() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory):
    """A second lab on PREFIX.110-130 that these tests may stop, break and wipe."""
    test_lab = start_test_lab(tmp_path_factory.mktemp("scratch"), TEST_NET, offset=100)
    try:
        yield test_lab
    finally:
        test_lab.lab.down()


def scratch_cli(scratch: TestLab, *args: str, subprocess: bool = False):
    return run_cli(scratch.inventory_dir, scratch.state_dir, *args, subprocess=subprocess)


def test_scratch_lab_uses_its_own_addresses(scratch: TestLab, lab: TestLab):
    assert scratch.lab.lab.ns1 == f"{TEST_NET}.110"
    assert set(scratch.lab.addresses()).isdisjoint(lab.lab.addresses())


def test_initial_zone_holds_only_soa_ns_glue_and_web_hosts(scratch: TestLab):
    zone = scratch.inventory.settings.zone
    transfer = dns.zone.from_xfr(dns.query.xfr(scratch.lab.lab.ns1, zone, keyring=tsig(scratch),
                                               timeout=5))
    found = {(name.to_text(), dns.rdatatype.to_text(rdataset.rdtype))
             for name, rdataset in transfer.iterate_rdatasets()}
    assert found == {("@", "SOA"), ("@", "NS"), ("ns1", "A"), ("ns2", "A"), ("web1", "A"),
                     ("web2", "A"), ("web3", "A")}
    assert answers(scratch.lab.lab.ns2, f"web2.{zone}", "A") == \
        [scratch.inventory.hosts["web2"].public_ipv4]
    assert answers(scratch.lab.lab.ns2, f"ns2.{zone}", "A") == [scratch.lab.lab.ns2]


def test_reset_wipes_sites_records_and_certificates_but_keeps_keys(scratch: TestLab):
    inv = scratch.inventory
    host = inv.hosts["web1"]
    zone = inv.settings.zone
    keys = {p: p.read_bytes() for p in (inv.settings.tsig_key_file, host.ssh_key_file,
                                         inv.settings.acme.ca_bundle)}
    known_hosts = inv.settings.known_hosts_file.read_text()
    (host.nginx_sites_dir / "dinkes.conf").write_text(
        f"server {{ listen {host.public_ipv4}:80; server_name dinkes.{zone}; return 200; }}\n")
    (host.web_root / "dinkes").mkdir()
    (host.web_root / "dinkes" / "index.html").write_text("site")
    (host.tls_dir / "dinkes.pem").write_text("cert")
    (host.acme_webroot / "token").write_text("token")
    add_a_record(scratch, f"dinkes.{zone}", host.public_ipv4)
    add_a_record(scratch, f"dinkes.{zone}", host.public_ipv4, server=scratch.lab.lab.pdns)
    nginx_reload(scratch, host)
    prod = inv.hosts["web3"]
    web3_folders = [scratch.lab.local(prod, d) for d in (prod.nginx_sites_dir, prod.web_root,
                                                          prod.tls_dir, prod.acme_webroot)]
    (web3_folders[0] / "dpupr.conf").write_text(
        f"server {{ listen {prod.public_ipv4}:80; server_name dpupr.{zone}; return 200; }}\n")
    (web3_folders[1] / "dpupr").mkdir()
    (web3_folders[2] / "dpupr.pem").write_text("cert")
    nginx_reload(scratch, prod)
    assert wait_for(lambda: answers(scratch.lab.lab.ns2, f"dinkes.{zone}", "A"))

    result = scratch_cli(scratch, "lab", "reset", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["sites_removed"] == ["web1:dinkes.conf", "web3:dpupr.conf"]
    assert report["reloaded"] == ["web1", "web2", "web3"]
    for folder in (host.nginx_sites_dir, host.web_root, host.tls_dir, host.acme_webroot,
                   *web3_folders):
        assert list(folder.iterdir()) == []
    for server in (scratch.lab.lab.ns1, scratch.lab.lab.ns2, scratch.lab.lab.pdns):
        assert answers(server, f"dinkes.{zone}", "A") == []
        assert answers(server, f"web1.{zone}", "A") == [host.public_ipv4]
    assert soa_serial(scratch.lab.lab.ns1, zone) == soa_serial(scratch.lab.lab.ns2, zone) \
        == report["zone_serial"]
    assert {p: p.read_bytes() for p in keys} == keys
    assert inv.settings.known_hosts_file.read_text() == known_hosts
    assert wait_for(lambda: no_site(host.public_ipv4, f"dinkes.{zone}"), timeout=3), \
        "the wiped vhost is still served after reset"
    assert scratch_cli(scratch, "lab", "status").exit_code == 0


def test_a_server_that_cannot_start_fails_with_its_log(scratch: TestLab):
    host = scratch.inventory.hosts["web2"]
    assert scratch_cli(scratch, "lab", "down").exit_code == 0
    broken = host.nginx_sites_dir / "broken.conf"
    broken.write_text("server { this_is_not_a_directive; }\n")
    try:
        result = scratch_cli(scratch, "lab", "up", subprocess=True)
        assert result.exit_code == 1
        assert "lab web2-nginx" in result.stderr
        assert "this_is_not_a_directive" in result.stderr  # nginx's own words, from its log
    finally:
        broken.unlink()
    result = scratch_cli(scratch, "lab", "up", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    actions = {s["name"]: s["action"] for s in json.loads(result.stdout)["servers"]}
    assert actions["web2-nginx"] == "started"
    assert actions["ns1"] == "already up"  # the first run got that far


def test_down_leaves_no_process_and_no_address_behind(scratch: TestLab):
    lab_dir = scratch.inventory.settings.lab.dir
    assert lab_processes(lab_dir), "the scratch lab should be running before this test"
    # An ssh ControlPersist master, as Ansible leaves one, must be closed too.
    host = scratch.inventory.hosts["web1"]
    control = Path(scratch.lab.ansible_env()["ANSIBLE_SSH_CONTROL_PATH_DIR"]) / "test-master"
    master = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(host.ssh_key_file), "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={scratch.inventory.settings.known_hosts_file}",
         "-o", "BatchMode=yes", "-o", "ControlMaster=yes", "-o", "ControlPersist=300",
         "-o", f"ControlPath={control}", f"root@{host.ssh_address}", "true"],
        capture_output=True, text=True, timeout=30)
    assert master.returncode == 0, master.stderr
    assert control.is_socket()
    # A process web3's deploy user left behind, outside sshd's tree but in its namespace.
    prod = scratch.inventory.hosts["web3"]
    status, _out, err = run_on(scratch, prod, "setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    assert status == 0, err
    sshd = scratch.lab.running_pid(next(s for s in scratch.lab.servers()
                                        if s.name == "web3-sshd"))
    namespace = os.readlink(f"/proc/{sshd}/ns/mnt")

    result = scratch_cli(scratch, "lab", "down", "--format", "json", subprocess=True)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {s["action"] for s in report["servers"]} == {"stopped"}
    assert report["ssh_masters_closed"] >= 1
    assert sorted(report["addresses_removed"]) == sorted(scratch.lab.addresses())

    assert wait_for(lambda: not lab_processes(lab_dir), timeout=3), lab_processes(lab_dir)
    assert wait_for(lambda: not in_namespace(namespace), timeout=3), in_namespace(namespace)
    assert lo_addresses().isdisjoint(scratch.lab.addresses())
    assert not list((lab_dir / "run").glob("*.pid"))
    status = scratch_cli(scratch, "lab", "status", "--format", "json")
    assert status.exit_code == 1
    assert not any(s["running"] for s in json.loads(status.stdout)["servers"])
    # A second down has nothing left to do.
    again = json.loads(scratch_cli(scratch, "lab", "down", "--format", "json").stdout)
    assert {s["action"] for s in again["servers"]} == {"not running"}
    assert again["addresses_removed"] == []


def test_down_never_kills_a_process_it_did_not_start(scratch: TestLab, tmp_path: Path):
    """A PID file pointing at someone else's process (PID reused) is left alone."""
    lab = scratch.lab
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = lab.paths.pid_file("acme")
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{stranger.pid}\n")
        report = lab.down()
        assert {s.name: s.action for s in report.servers}["acme"] == "stale pid file removed"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_inventory_of_the_scratch_lab_still_loads(scratch: TestLab):
    """Keys created by the lab pass the registry's own checks (0600 TSIG key)."""
    inventory = load_inventory(scratch.inventory_dir, scratch.state_dir)
    assert Lab(inventory).key_name() == load_tsig_key(
        inventory.settings.tsig_key_file).name
