"""The lab's rendered configs, keys and helpers, checked without starting a server.

Where Debian ships a checker (named-checkconf, named-checkzone, nginx -t, sshd -t)
the rendered file is fed to it, so a template typo fails here, not at 'lab up'.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioner.dns.tsig import parse_tsig_key
from provisioner.errors import InputError, LabError
from provisioner.hosts import hostlib
from provisioner.lab import keys, layout, prepare, render, topology
from provisioner.lab.control import Lab
from provisioner.registry.init import render_inventory
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Inventory

SAMPLE = Path(__file__).resolve().parents[2] / "inventory"


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return load_inventory(SAMPLE, tmp_path / "state")


@pytest.fixture
def lab(inventory: Inventory) -> Lab:
    return Lab(inventory)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


# --------------------------------------------------------------------------- zone


def test_zone_holds_only_soa_ns_glue_and_web_hosts(inventory: Inventory):
    text = render.zone_file_text(inventory.settings, inventory.hosts.values(), 2024010101)
    zone = dns.zone.from_text(text, origin=inventory.settings.zone, relativize=False)
    found = {(name.to_text(), dns.rdatatype.to_text(rds.rdtype), rdata.to_text())
             for name, rds in zone.iterate_rdatasets() for rdata in rds
             if rds.rdtype != dns.rdatatype.SOA}
    assert found == {
        ("paserkab.go.id.", "NS", "ns1.paserkab.go.id."),
        ("paserkab.go.id.", "NS", "ns2.paserkab.go.id."),
        ("ns1.paserkab.go.id.", "A", "127.0.0.10"),
        ("ns2.paserkab.go.id.", "A", "127.0.0.11"),
        ("web1.paserkab.go.id.", "A", "127.0.0.20"),
        ("web2.paserkab.go.id.", "A", "127.0.0.21"),
        ("web3.paserkab.go.id.", "A", "127.0.0.22"),
    }
    soa = zone.get_rdataset("paserkab.go.id.", "SOA")[0]
    assert soa.serial == 2024010101
    assert soa.mname.to_text() == "ns1.paserkab.go.id."


def test_zone_passes_named_checkzone(inventory: Inventory, tmp_path: Path):
    path = tmp_path / "db.zone"
    path.write_text(render.zone_file_text(inventory.settings, inventory.hosts.values(), 7))
    checked = run("named-checkzone", "-i", "local", inventory.settings.zone, str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_hosts_outside_the_zone_get_no_record(inventory: Inventory):
    host = dataclasses.replace(inventory.hosts["web1"], fqdn="web1.example.net")
    names = {r.name for r in render.zone_records(inventory.settings, [host])}
    assert "web1.example.net." not in names


def test_ipv6_host_gets_aaaa(inventory: Inventory):
    host = dataclasses.replace(inventory.hosts["web1"], public_ipv6="fd00::20")
    records = render.zone_records(inventory.settings, [host])
    assert render.Record("web1.paserkab.go.id.", "AAAA", "fd00::20") in records


# --------------------------------------------------------------------------- BIND


@pytest.fixture
def key_file(inventory: Inventory) -> Path:
    keys.ensure_tsig_key(inventory.settings.tsig_key_file, "lab-key")
    return inventory.settings.tsig_key_file


def test_primary_config_allows_updates_and_transfers_with_the_key(
        inventory: Inventory, lab: Lab, key_file: Path):
    text = render.named_conf(inventory.settings, lab.paths, "lab-key", "ns1")
    assert 'allow-update { key "lab-key"; };' in text
    assert 'allow-transfer { key "lab-key"; 127.0.0.11; };' in text
    assert "listen-on port 53 { 127.0.0.10; };" in text
    assert "recursion no;" in text
    for option in ("notify-source 127.0.0.10;", "transfer-source 127.0.0.10;",
                   "query-source address 127.0.0.10;", "notify-delay 0;"):
        assert option in text
    assert "also-notify { 127.0.0.11 port 53; };" in text
    assert f'journal "{lab.paths.zone_file("ns1", "paserkab.go.id")}.jnl";' in text
    assert "controls { };" in text


def test_secondary_config_transfers_from_the_primary(inventory: Inventory, lab: Lab,
                                                     key_file: Path):
    text = render.named_conf(inventory.settings, lab.paths, "lab-key", "ns2")
    assert "type secondary;" in text
    assert "primaries { 127.0.0.10 port 53; };" in text
    assert "transfer-source 127.0.0.11;" in text
    assert "listen-on port 53 { 127.0.0.11; };" in text


def test_the_two_named_instances_share_no_state_file(inventory: Inventory, lab: Lab,
                                                     key_file: Path):
    def paths(text: str) -> set[str]:
        return {line.split('"')[1] for line in text.splitlines()
                if any(k in line for k in ("pid-file", "session-keyfile", "lock-file", "file \""))}

    one = paths(render.named_conf(inventory.settings, lab.paths, "lab-key", "ns1"))
    two = paths(render.named_conf(inventory.settings, lab.paths, "lab-key", "ns2"))
    assert one and two and one.isdisjoint(two)


@pytest.mark.parametrize("role", ["ns1", "ns2"])
def test_named_configs_pass_named_checkconf(inventory: Inventory, lab: Lab, key_file: Path,
                                            tmp_path: Path, role: str):
    for server in ("ns1", "ns2"):
        lab.paths.ns_dir(server).mkdir(parents=True)  # named-checkconf changes into it
    conf = tmp_path / "named.conf"
    conf.write_text(render.named_conf(inventory.settings, lab.paths, "lab-key", role))
    checked = run("named-checkconf", str(conf))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --------------------------------------------------------------------------- TSIG key


def test_tsig_key_is_created_0600_in_bind_format_and_kept(tmp_path: Path):
    path = tmp_path / "keys" / "tsig.key"
    key = keys.ensure_tsig_key(path, "lab-key")
    assert path.stat().st_mode & 0o777 == 0o600
    assert key.algorithm == "hmac-sha256" and key.name == "lab-key"
    assert len(__import__("base64").b64decode(key.secret)) == 32
    assert run("named-checkconf", str(path)).returncode == 0
    assert keys.ensure_tsig_key(path, "other-name") == key  # an existing key is never replaced


def test_the_key_file_the_lab_writes_is_what_tsig_keygen_writes(tmp_path: Path):
    made = run("tsig-keygen", "-a", "hmac-sha256", "made-by-bind")
    key = parse_tsig_key(made.stdout, tmp_path / "made.key")
    assert key.name == "made-by-bind" and key.algorithm == "hmac-sha256"
    assert parse_tsig_key(render.tsig_key_text(key), tmp_path / "again.key") == key


# --------------------------------------------------------------------------- nginx, sshd


def test_nginx_conf_listens_on_the_host_address_with_a_catch_all(inventory: Inventory,
                                                                 lab: Lab):
    host = inventory.hosts["web1"]
    text = render.nginx_conf(host, lab.paths.host(host))
    assert "listen 127.0.0.20:80 default_server;" in text
    assert "return 444;" in text
    assert "listen 127.0.0.20:443 ssl default_server;" in text
    assert "ssl_reject_handshake on;" in text
    assert f"include {host.nginx_sites_dir}/*.conf;" in text
    assert f"pid {lab.paths.host(host).nginx_pid};" in text
    listens = [line for line in text.splitlines() if line.strip().startswith("listen")]
    assert all("127.0.0.20:" in line for line in listens)


def test_nginx_conf_passes_nginx_t(inventory: Inventory, lab: Lab, tmp_path: Path):
    host = inventory.hosts["web2"]
    hp = lab.paths.host(host)
    for d in (host.nginx_sites_dir, host.log_dir, hp.temp_dir, hp.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    conf = host.nginx_main_config
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(render.nginx_conf(host, lab.paths.host(host)))
    checked = run(host.nginx_binary, "-t", "-c", str(conf), "-e", str(tmp_path / "error.log"))
    assert checked.returncode == 0, checked.stderr


def test_sshd_config_is_key_only_and_passes_sshd_t(inventory: Inventory, lab: Lab):
    host = inventory.hosts["web1"]
    hp = lab.paths.host(host)
    keys.ensure_ssh_key(hp.host_key, "test-host")
    text = render.sshd_config(host, hp)
    assert "ListenAddress 127.0.0.20:22" in text
    assert "PasswordAuthentication no" in text
    assert "PermitRootLogin prohibit-password" in text
    assert f"Include {host.sshd.config_dir}/*.conf" in text
    hp.sshd_config.write_text(text)
    Path("/run/sshd").mkdir(exist_ok=True)
    checked = run("/usr/sbin/sshd", "-t", "-f", str(hp.sshd_config))
    assert checked.returncode == 0, checked.stderr


def test_ssh_key_is_openssh_ed25519_0600_and_kept(tmp_path: Path):
    path = tmp_path / "id_ed25519"
    public = keys.ensure_ssh_key(path, "provisioner-lab")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" provisioner-lab")
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN OPENSSH PRIVATE KEY" in path.read_bytes()
    assert keys.ensure_ssh_key(path, "provisioner-lab") == public
    derived = run("ssh-keygen", "-y", "-f", str(path))
    assert derived.stdout.split()[:2] == public.split()[:2]


def test_known_hosts_lines_suit_openssh_and_paramiko():
    key = "ssh-ed25519 AAAAC3Nza comment"
    assert render.known_hosts_lines("127.0.0.20", 22, key) == [
        "127.0.0.20 ssh-ed25519 AAAAC3Nza", "[127.0.0.20]:22 ssh-ed25519 AAAAC3Nza"]
    assert render.known_hosts_lines("127.0.0.20", 2222, key) == \
        ["[127.0.0.20]:2222 ssh-ed25519 AAAAC3Nza"]


def test_merge_known_hosts_replaces_only_lab_hosts():
    existing = "prod.example ssh-ed25519 PROD\n127.0.0.20 ssh-ed25519 OLD\n"
    merged = render.merge_known_hosts(existing, {"web1": ["127.0.0.20 ssh-ed25519 NEW"]})
    assert merged == "prod.example ssh-ed25519 PROD\n127.0.0.20 ssh-ed25519 NEW\n"


# --------------------------------------------------------------------------- Pebble


def test_pebble_config(inventory: Inventory, lab: Lab):
    config = json.loads(render.pebble_config(inventory.settings.lab, lab.paths))["pebble"]
    assert config["listenAddress"] == "127.0.0.30:14000"
    assert config["managementListenAddress"] == "127.0.0.30:15000"
    assert (config["httpPort"], config["tlsPort"]) == (80, 443)
    assert config["certificate"] == str(lab.paths.api_cert)


def test_api_certificate_names_the_acme_address(tmp_path: Path):
    ca_pem, ca_key = keys.make_api_ca()
    cert_pem, key_pem = keys.make_api_cert(ca_pem, ca_key, "127.0.0.30")
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    assert keys.api_cert_fits(tmp_path / "cert.pem", tmp_path / "ca.pem", "127.0.0.30")
    assert not keys.api_cert_fits(tmp_path / "cert.pem", tmp_path / "ca.pem", "127.0.1.30")
    assert not keys.api_cert_fits(tmp_path / "missing.pem", tmp_path / "ca.pem", "127.0.0.30")
    serialization.load_pem_private_key(key_pem, password=None)


def _self_signed() -> str:
    return keys.make_api_ca()[0].decode()  # a distinct certificate each call


def test_merge_roots_puts_the_current_root_first_without_duplicates():
    old, new = _self_signed(), _self_signed()
    assert keys.split_pem(keys.merge_roots(new, old)) == [new, old]
    assert keys.split_pem(keys.merge_roots(new, new + old)) == [new, old]
    many = "".join(_self_signed() for _ in range(5))
    assert len(keys.split_pem(keys.merge_roots(new, many, keep=3))) == 3


# --------------------------------------------------------------------------- Lab checks


def test_lab_refuses_an_inventory_without_a_lab_block(inventory: Inventory):
    settings = dataclasses.replace(inventory.settings, lab=None)
    with pytest.raises(LabError, match="no 'lab' block"):
        Lab(dataclasses.replace(inventory, settings=settings))


def test_lab_refuses_a_lab_host_off_loopback(inventory: Inventory):
    hosts = dict(inventory.hosts)
    hosts["web1"] = dataclasses.replace(hosts["web1"], ssh_address="192.0.2.20")
    with pytest.raises(LabError, match="127.0.0.0/8"):
        Lab(dataclasses.replace(inventory, hosts=hosts))


def test_lab_refuses_a_primary_that_is_not_ns1(inventory: Inventory):
    primary = dataclasses.replace(inventory.settings.primary, address="127.0.0.99")
    settings = dataclasses.replace(inventory.settings, primary=primary)
    with pytest.raises(LabError, match="dns_primary"):
        Lab(dataclasses.replace(inventory, settings=settings))


def test_servers_and_addresses(lab: Lab):
    assert [s.name for s in lab.servers()] == [
        "ns1", "ns2", "pdns", "web1-sshd", "web2-sshd", "web3-sshd", "web1-nginx",
        "web2-nginx", "web3-nginx", "acme"]
    assert lab.addresses() == ["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.20",
                               "127.0.0.21", "127.0.0.22", "127.0.0.30"]
    pebble = lab.servers()[-1]
    assert pebble.env == {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    assert pebble.argv[-2:] == ("-dnsserver", "127.0.0.10:53")
    # Every server is recognised by a config path unique to this lab.
    assert len({s.marker for s in lab.servers()}) == 10
    assert all(s.marker.startswith(str(lab.paths.dir) + "/") for s in lab.servers())


def test_the_production_shaped_host_runs_in_its_own_mount_namespace(lab: Lab):
    web3 = lab.inventory.hosts["web3"]
    hp = lab.paths.host(web3)
    specs = {s.name: s for s in lab.servers()}
    sshd, nginx = specs["web3-sshd"], specs["web3-nginx"]
    assert sshd.argv[:5] == (topology.UNSHARE_BINARY, "--mount", "--propagation", "private", "--")
    assert sshd.namespace and sshd.executable == topology.SSHD_BINARY
    # nginx joins sshd's namespace after it (no PID yet: /proc/0 names none) and reads
    # the production path, not a lab one.
    assert nginx.stage > sshd.stage and nginx.argv[0] == topology.NSENTER_BINARY
    assert nginx.argv[1] == "--mount=/proc/0/ns/mnt"
    assert ("-c", "/etc/nginx/nginx.conf") == nginx.argv[nginx.argv.index("-c"):][:2]
    script = render.namespace_script(web3, hp)
    for mount in layout.NAMESPACE_MOUNTS:
        assert f"mount --bind '{hp.fs_dir}{mount}' '{mount}'" in script
    assert script.rstrip().endswith('exec "$@"')
    # Every inventory path of web3 is a lab folder on this machine.
    assert lab.local(web3, web3.web_root) == hp.fs_dir / "var/www/agencies"
    assert lab.local(web3, web3.nginx_sites_dir) == hp.fs_dir / "etc/nginx/sites-enabled"
    web1 = lab.inventory.hosts["web1"]
    assert lab.local(web1, web1.web_root) == web1.web_root
    with pytest.raises(LabError, match="outside the folders the lab mounts"):
        hp.outside(Path("/srv/www"))


def test_production_shaped_configs_use_debian_paths_and_a_sudo_user(lab: Lab):
    web3 = lab.inventory.hosts["web3"]
    hp = lab.paths.host(web3)
    nginx = render.nginx_conf(web3, hp, production=True)
    for line in ("user www-data;", "pid /run/nginx.pid;", "error_log /var/log/nginx/error.log;",
                 "include /etc/nginx/sites-enabled/*.conf;",
                 "client_body_temp_path /var/lib/nginx/client_body;"):
        assert line in nginx
    sshd = render.sshd_config(web3, hp, production=True)
    assert "PermitRootLogin no" in sshd and "AllowGroups deploy provisioner-sftp" in sshd
    assert sshd.splitlines()[2] == "Include /etc/ssh/sshd_config.d/*.conf"
    assert "AuthorizedKeysFile .ssh/authorized_keys" in sshd
    assert "PidFile /run/sshd.pid" in sshd
    assert "PermitRootLogin prohibit-password" in render.sshd_config(
        lab.inventory.hosts["web1"], lab.paths.host(lab.inventory.hosts["web1"]))
    assert render.sudoers_drop_in("deploy").splitlines()[-1] == "deploy ALL=(ALL:ALL) NOPASSWD: ALL"


def test_powerdns_serves_the_zone_from_sqlite_with_updates_and_signed_transfers_only(
        lab: Lab):
    conf = render.pdns_conf(lab.settings, lab.paths, "127.0.0.12")
    lines = conf.splitlines()
    for line in ("launch=gsqlite3", f"gsqlite3-database={lab.paths.pdns_database}",
                 "local-address=127.0.0.12", "local-port=53", "dnsupdate=yes",
                 "allow-axfr-ips=", "daemon=no", "domain-metadata-cache-ttl=0"):
        assert line in lines
    pdns = lab.pdns_settings()
    assert pdns.primary.address == "127.0.0.12" and pdns.nameservers == (pdns.primary,)
    zone = dns.zone.from_text(render.zone_file_text(pdns, lab.inventory.hosts.values(), 1),
                              origin=pdns.zone, relativize=False)
    assert [r.to_text() for r in zone.get_rdataset(pdns.zone + ".", "NS")] == \
        ["pdns.paserkab.go.id."]
    spec = next(s for s in lab.servers() if s.name == "pdns")
    assert spec.argv == (topology.PDNS_BINARY, f"--config-dir={lab.paths.pdns_dir}")


def test_nginx_workers_are_unprivileged_and_get_a_way_through_a_closed_state_dir(
        lab: Lab):
    web1 = lab.inventory.hosts["web1"]
    hp = lab.paths.host(web1)
    assert "user www-data;" in render.nginx_conf(web1, hp)
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:  # /tmp: every folder above open
        Path(scratch).chmod(0o755)
        closed = Path(scratch) / "state"
        (closed / "lab" / "web1").mkdir(parents=True)
        closed.chmod(0o700)
        assert prepare.closed_ancestor(closed / "lab" / "web1", "www-data") == closed
        closed.chmod(0o711)
        assert prepare.closed_ancestor(closed / "lab" / "web1", "www-data") is None
    script = render.nginx_namespace_script(web1, hp, closed)
    assert f"mount -t tmpfs -o mode=0711,size=1m provisioner-lab '{closed}'" in script
    assert f"mount --move /mnt '{hp.dir}'" in script and script.rstrip().endswith('exec "$@"')


def test_ansible_env_points_into_the_lab(lab: Lab):
    env = lab.ansible_env()
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"].startswith(str(lab.paths.dir))
    assert env["ANSIBLE_REMOTE_TEMP"].startswith(str(lab.paths.dir))
    assert f"UserKnownHostsFile={lab.settings.known_hosts_file}" in env["ANSIBLE_SSH_ARGS"]


def test_write_file_sets_the_mode_and_reports_changes(tmp_path: Path):
    path = tmp_path / "a" / "secret"
    assert keys.write_file(path, "x", 0o600) is True
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.write_file(path, "x", 0o600) is False
    assert keys.write_file(path, "y", 0o600) is True and path.read_text() == "y"


def test_process_cmdline_of_a_missing_process_is_none():
    assert hostlib.process_cmdline(2 ** 22 + 1) is None
    assert "pytest" in (hostlib.process_cmdline(__import__("os").getpid()) or "")


def test_the_production_shaped_host_is_what_init_writes_but_its_address_and_sudo_user():
    def webservers(text: str) -> dict:
        return yaml.safe_load(text)["all"]["children"]["webservers"]

    written = webservers(render_inventory("paserkab.go.id")["hosts.yml"])
    sample = webservers((SAMPLE / "hosts.yml").read_text())["children"]["sudo_login"]
    expected = {key: value.replace("192.0.2.20", "127.0.0.22").replace("web1.", "web3.")
                for key, value in written["hosts"]["web1"].items()}
    assert sample["hosts"]["web3"] == expected
    assert sample["vars"] == {**written["vars"], "ansible_user": "deploy",
                              "ansible_become": True}


def sample_copy(tmp_path: Path, edit) -> Path:
    """The sample inventory with ``edit(hosts, settings)`` applied to its parsed YAML."""
    copy = tmp_path / "inventory"
    shutil.copytree(SAMPLE, copy)
    hosts, settings = copy / "hosts.yml", copy / "group_vars" / "all.yml"
    hosts_data, settings_data = yaml.safe_load(hosts.read_text()), \
        yaml.safe_load(settings.read_text())
    edit(hosts_data, settings_data)
    hosts.write_text(yaml.safe_dump(hosts_data, sort_keys=False))
    settings.write_text(yaml.safe_dump(settings_data, sort_keys=False, allow_unicode=True))
    return copy


def test_a_login_other_than_root_must_become_root(tmp_path: Path):
    def no_become(hosts: dict, _settings: dict) -> None:
        hosts["all"]["children"]["webservers"]["children"]["sudo_login"]["vars"][
            "ansible_become"] = False

    with pytest.raises(InputError) as caught:
        load_inventory(sample_copy(tmp_path, no_become), tmp_path / "state")
    [problem] = caught.value.problems
    assert "web3.ansible_become" in str(problem) and "deploy is not root" in str(problem)


def test_the_lab_refuses_a_production_host_the_inventory_does_not_have(tmp_path: Path):
    def unknown(_hosts: dict, settings: dict) -> None:
        settings["lab"]["production_hosts"] = ["web9"]

    inventory = load_inventory(sample_copy(tmp_path, unknown), tmp_path / "state")
    with pytest.raises(LabError, match="web9"):
        Lab(inventory)


@pytest.mark.parametrize("change, expected", [
    ({"pdns": "192.0.2.12"}, "lab.pdns: the lab only runs on loopback"),
    ({"production_hosts": "web3"}, "lab.production_hosts: must be a list of host names"),
])
def test_lab_settings_take_a_loopback_pdns_and_a_list_of_production_hosts(
        tmp_path: Path, change: dict, expected: str):
    with pytest.raises(InputError) as caught:
        load_inventory(sample_copy(tmp_path, lambda _h, s: s["lab"].update(change)),
                       tmp_path / "state")
    assert expected in "\n".join(str(p) for p in caught.value.problems)
