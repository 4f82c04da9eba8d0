"""The local lab: real BIND, PowerDNS, nginx, OpenSSH and Pebble on loopback addresses.

A production-shaped host (``lab.production_hosts``) runs in its own mount namespace,
where lab folders are mounted over /etc/nginx, /var/www, ... and SSH logins are a sudo
user's; the other hosts keep their files under ``lab.dir``. Every nginx's workers run
as www-data.

Three layers, top to bottom:

* layout and rendering: where every lab file lives and what goes in it (pure
  functions of the inventory, unit-tested without servers);
* system helpers: keys and certificates, loopback addresses, processes, probes;
* ``Lab``: ``up`` / ``down`` / ``status`` / ``reset``, returning dataclasses that
  ``provisioner/cli/`` renders.

The lab owns only what it created: processes by the PID files it wrote (checked
against /proc/PID/cmdline before any signal), the loopback addresses it recorded as
added, and the files under ``lab.dir`` plus the key, trust and known_hosts files
the inventory names (and the system user of a production-shaped host, which it creates
when missing and leaves in place).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..dns.client import TsigKey, load_tsig_key
from ..errors import HostError, LabError
from ..hosts.agent import HostClient, host_agent
from ..paths import TEMPLATES_DIR
from ..registry.models import Host, Inventory, LabSettings, Nameserver, Settings

TEMPLATE_DIR = TEMPLATES_DIR / "lab"
PEBBLE_BINARY = "/usr/bin/pebble"
NAMED_BINARY = "/usr/sbin/named"
SSHD_BINARY = "/usr/sbin/sshd"
PDNS_BINARY = "/usr/sbin/pdns_server"
PDNSUTIL = "/usr/bin/pdnsutil"
PDNS_SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
# The zone metadata a PowerDNS primary needs for this toolkit (README, "Going live").
PDNS_ZONE_METADATA = ("TSIG-ALLOW-DNSUPDATE", "TSIG-ALLOW-AXFR")
UNSHARE_BINARY = "/usr/bin/unshare"
NSENTER_BINARY = "/usr/bin/nsenter"
SHELL = "/bin/sh"
NGINX_WORKER_USER = "www-data"
# What a production-shaped host's mount namespace covers: each of these paths is a lab
# folder inside it (the machine's own stay untouched). /var/lib/nginx holds nginx's
# temp files, /etc/sudoers.d the sudo user's drop-in, /home its ~/.ssh, /run the pid files,
# /etc/ssh the sshd drop-ins and agencies' SFTP keys provisioner writes.
NAMESPACE_MOUNTS = ("/etc/nginx", "/etc/sudoers.d", "/var/www", "/var/log/nginx",
                    "/var/lib/nginx", "/home", "/run", "/etc/ssh")
SUDOERS_DROP_IN = "provisioner-lab"
PEBBLE_MANAGEMENT_PORT = 15000
READY_TIMEOUT = 20.0  # seconds a server may take to answer its probe after start
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
# A server that is still starting does not answer (UDP: no error at all): probe briefly
# and often while waiting, patiently for 'lab status'.
READY_PROBE_TIMEOUT = 0.1
STATUS_PROBE_TIMEOUT = 2.0
MAX_KEPT_ROOTS = 20  # Pebble roots of earlier starts kept in the trust file
LOG_TAIL_LINES = 25


# =========================================================================== layout


@dataclass(frozen=True)
class HostPaths:
    """Lab-internal files of one web host (the inventory names the nginx/site paths)."""

    dir: Path

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def sshd_pid(self) -> Path:
        return self.run_dir / "sshd.pid"

    @property
    def nginx_pid(self) -> Path:
        """nginx's own pid file: ``nginx -c CONF -s reload`` reads it."""
        return self.run_dir / "nginx.pid"

    @property
    def temp_dir(self) -> Path:
        return self.dir / "tmp"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def nginx_namespace_script(self) -> Path:
        return self.dir / "nginx-namespace.sh"

    # A production-shaped host: the folders its mount namespace puts over the system's.

    @property
    def fs_dir(self) -> Path:
        """``fs/etc/nginx`` is the host's /etc/nginx, and so on for NAMESPACE_MOUNTS."""
        return self.dir / "fs"

    @property
    def namespace_script(self) -> Path:
        return self.dir / "namespace.sh"

    def outside(self, path: Path) -> Path:
        """Where a path inside the host's namespace lives on this machine."""
        path = Path(path)
        for mount in NAMESPACE_MOUNTS:
            if path.is_relative_to(mount):
                return self.fs_dir / path.relative_to("/")
        raise LabError(self.dir.name, f"{path} is outside the folders the lab mounts "
                                      f"({', '.join(NAMESPACE_MOUNTS)})",
                       hint="a production-shaped lab host keeps its files under those paths")


@dataclass(frozen=True)
class LabPaths:
    """Every file the lab keeps under ``lab.dir``."""

    dir: Path

    @property
    def run_dir(self) -> Path:
        """The lab's own PID files and the record of loopback addresses it added."""
        return self.dir / "run"

    @property
    def addresses_file(self) -> Path:
        return self.run_dir / "addresses.json"

    def pid_file(self, server: str) -> Path:
        return self.run_dir / f"{server}.pid"

    def ns_dir(self, server: str) -> Path:
        return self.dir / server

    def named_conf(self, server: str) -> Path:
        return self.ns_dir(server) / "named.conf"

    def zone_file(self, server: str, zone: str) -> Path:
        return self.ns_dir(server) / f"db.{zone}"

    def host(self, host: Host) -> HostPaths:
        return HostPaths(self.dir / host.name)

    @property
    def pdns_dir(self) -> Path:
        return self.dir / "pdns"

    @property
    def pdns_config(self) -> Path:
        return self.pdns_dir / "pdns.conf"

    @property
    def pdns_database(self) -> Path:
        return self.pdns_dir / "pdns.sqlite3"

    @property
    def pebble_dir(self) -> Path:
        return self.dir / "pebble"

    @property
    def pebble_config(self) -> Path:
        return self.pebble_dir / "pebble.json"

    @property
    def api_ca_key(self) -> Path:
        return self.pebble_dir / "api-ca.key"

    @property
    def api_cert(self) -> Path:
        return self.pebble_dir / "api-cert.pem"

    @property
    def api_key(self) -> Path:
        return self.pebble_dir / "api-key.pem"

    @property
    def pebble_intermediates(self) -> Path:
        return self.pebble_dir / "intermediates.pem"

    @property
    def default_api_ca(self) -> Path:
        return self.pebble_dir / "api-ca.pem"

    @property
    def control_dir(self) -> Path:
        """Ansible's ANSIBLE_SSH_CONTROL_PATH_DIR: short, Unix sockets allow ~107 bytes."""
        return self.dir / "cp"

    @property
    def ansible_local_tmp(self) -> Path:
        return self.dir / "ansible" / "local"

    @property
    def ansible_remote_tmp(self) -> Path:
        return self.dir / "ansible" / "remote"


# =========================================================================== rendering (pure)

_jinja = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def render(template: str, **values: object) -> str:
    return _jinja.get_template(template).render(**values)


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with the trailing dot
    type: str
    value: str


def _absolute(name: str) -> str:
    return name.rstrip(".") + "."


def _in_zone(name: str, zone: str) -> bool:
    name, zone = name.rstrip(".").lower(), zone.rstrip(".").lower()
    return name == zone or name.endswith("." + zone)


def zone_records(settings: Settings, hosts: Iterable[Host]) -> list[Record]:
    """The initial zone's records besides SOA: NS, their glue, and the web hosts' names."""
    zone = settings.zone
    records: list[Record] = []
    for ns in settings.nameservers:
        records.append(Record(_absolute(zone), "NS", _absolute(ns.name)))
    seen: set[tuple[str, str]] = set()

    def address(name: str, value: str) -> None:
        rtype = "A" if ipaddress.ip_address(value).version == 4 else "AAAA"
        if _in_zone(name, zone) and (name, value) not in seen:
            seen.add((name, value))
            records.append(Record(_absolute(name), rtype, value))

    for ns in settings.nameservers:
        address(ns.name, ns.address)
    for host in hosts:
        if host.fqdn:
            address(host.fqdn, host.public_ipv4)
            if host.public_ipv6:
                address(host.fqdn, host.public_ipv6)
    return records


def zone_file_text(settings: Settings, hosts: Iterable[Host], serial: int) -> str:
    zone = settings.zone
    mname = settings.nameservers[0].name if settings.nameservers else settings.primary.name
    return render(
        "zone.db.j2",
        zone=zone,
        origin=_absolute(zone),
        ttl=settings.record_ttl,
        mname=_absolute(mname),
        rname=_absolute(f"hostmaster.{zone}"),
        serial=serial,
        records=zone_records(settings, hosts),
    )


@dataclass(frozen=True)
class DnsEndpoints:
    """Where the two lab nameservers listen (from the inventory's lab block)."""

    ns1: str
    ns1_port: int
    ns2: str
    ns2_port: int


def dns_endpoints(settings: Settings) -> DnsEndpoints:
    lab = _require_lab(settings)
    ns2_port = next((ns.port for ns in settings.nameservers if ns.address == lab.ns2), 53)
    return DnsEndpoints(lab.ns1, settings.primary.port, lab.ns2, ns2_port)


def named_primary_conf(settings: Settings, paths: LabPaths, key_name: str) -> str:
    ep = dns_endpoints(settings)
    return render(
        "named-primary.conf.j2",
        zone=settings.zone,
        dir=paths.ns_dir("ns1"),
        zone_file=paths.zone_file("ns1", settings.zone),
        tsig_key_file=settings.tsig_key_file,
        key_name=key_name,
        address=ep.ns1,
        port=ep.ns1_port,
        secondary_address=ep.ns2,
        secondary_port=ep.ns2_port,
    )


def named_secondary_conf(settings: Settings, paths: LabPaths, key_name: str) -> str:
    ep = dns_endpoints(settings)
    return render(
        "named-secondary.conf.j2",
        zone=settings.zone,
        dir=paths.ns_dir("ns2"),
        zone_file=paths.zone_file("ns2", settings.zone),
        tsig_key_file=settings.tsig_key_file,
        key_name=key_name,
        address=ep.ns2,
        port=ep.ns2_port,
        primary_address=ep.ns1,
        primary_port=ep.ns1_port,
    )


def nginx_conf(host: Host, hp: HostPaths, production: bool = False) -> str:
    """The main config; a production-shaped host's uses Debian's paths (its namespace)."""
    return render(
        "nginx.conf.j2",
        host=host.name,
        address=host.public_ipv4,
        user=NGINX_WORKER_USER,
        pid_file="/run/nginx.pid" if production else hp.nginx_pid,
        log_dir="/var/log/nginx" if production else host.log_dir,
        temp_dir="/var/lib/nginx" if production else hp.temp_dir,
        sites_dir=host.nginx_sites_dir,
    )


def sshd_config(host: Host, hp: HostPaths, production: bool = False) -> str:
    return render(
        "sshd_config.j2",
        host=host.name,
        address=host.ssh_address,
        port=host.ssh_port,
        user=host.ssh_user,
        host_key=hp.host_key,
        pid_file="/run/sshd.pid" if production else hp.sshd_pid,
        authorized_keys=".ssh/authorized_keys" if production else hp.authorized_keys,
        drop_in_dir=host.sshd.config_dir,
    )


def namespace_script(host: Host, hp: HostPaths) -> str:
    return render("namespace.sh.j2", host=host.name,
                  mounts=[(mount, hp.outside(Path(mount))) for mount in NAMESPACE_MOUNTS])


def closed_ancestor(path: Path, user: str) -> Path | None:
    """The first folder on the way to ``path`` that ``user`` may not pass (mode, owner)."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise LabError("nginx", f"there is no user {user} for nginx's workers",
                       hint="Debian's base-passwd has it; create it with useradd") from None
    for folder in [*reversed(Path(path).parents), Path(path)]:
        info = folder.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == account.pw_gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return folder
    return None


def nginx_namespace_script(host: Host, hp: HostPaths, cover: Path) -> str:
    return render("nginx-namespace.sh.j2", host=host.name, user=NGINX_WORKER_USER,
                  cover=cover, host_dir=hp.dir)


def sudoers_drop_in(user: str) -> str:
    return f"# provisioner lab: {user} becomes root without a password, as on the hosts.\n" \
           f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def pdns_conf(settings: Settings, paths: LabPaths, address: str) -> str:
    return render("pdns.conf.j2", zone=settings.zone, database=paths.pdns_database,
                  address=address, port=53, dir=paths.pdns_dir)


def pebble_config(lab: LabSettings, paths: LabPaths) -> str:
    return render(
        "pebble.json.j2",
        listen=f"{lab.acme}:{lab.acme_port}",
        management_listen=f"{lab.acme}:{PEBBLE_MANAGEMENT_PORT}",
        certificate=str(paths.api_cert),
        private_key=str(paths.api_key),
    )


def tsig_key_text(key: TsigKey) -> str:
    """BIND key-file format, as tsig-keygen writes it."""
    return f'key "{key.name}" {{\n\talgorithm {key.algorithm};\n\tsecret "{key.secret}";\n}};\n'


def known_hosts_lines(address: str, port: int, public_key: str) -> list[str]:
    """Entries for one host, matched by OpenSSH and paramiko alike.

    Both look a host on port 22 up by its bare address and any other port as
    ``[ADDR]:PORT``; the bracketed form on port 22 is added for tools that always
    bracket.
    """
    key = " ".join(public_key.split()[:2])
    lines = [f"[{address}]:{port} {key}"]
    if port == 22:
        lines.insert(0, f"{address} {key}")
    return lines


def merge_known_hosts(existing: str, entries: dict[str, list[str]]) -> str:
    """Replace the lines of the given host patterns, keep every other line."""
    patterns = {line.split()[0] for lines in entries.values() for line in lines}
    kept = [line for line in existing.splitlines()
            if line.strip() and line.split()[0] not in patterns]
    new = [line for lines in entries.values() for line in lines]
    return "\n".join(kept + new) + "\n"


# =========================================================================== files, keys, certs


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Write atomically with ``mode`` (set before any byte lands); False when unchanged."""
    raw = data.encode() if isinstance(data, str) else data
    path = Path(path)
    try:
        if path.read_bytes() == raw and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def ensure_tsig_key(path: Path, default_name: str) -> TsigKey:
    """Read the TSIG key file, or create it (hmac-sha256, 256-bit secret, mode 0600)."""
    if Path(path).exists():
        return load_tsig_key(path)
    key = TsigKey(default_name, "hmac-sha256", base64.b64encode(secrets.token_bytes(32)).decode())
    write_file(path, tsig_key_text(key), 0o600)
    return key


def ensure_backup_password(path: Path) -> None:
    """Create the lab's backup repository password file (random, mode 0600) once."""
    if not Path(path).exists():
        write_file(path, secrets.token_urlsafe(32) + "\n", 0o600)


def ensure_ssh_key(path: Path, comment: str) -> str:
    """Return the public key line of an ed25519 key, creating the key pair if missing."""
    path = Path(path)
    if path.exists():
        try:
            private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise LabError("ssh", f"cannot read private key {path}: {exc}") from None
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        write_file(path, private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), 0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}\n"
    write_file(path.with_name(path.name + ".pub"), line, 0o644)
    return line.strip()


def ensure_system_user(name: str) -> None:
    """Create the unprivileged login user of a production-shaped host if missing."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    # No password at all ("*"): a locked one ("!") would keep sshd from letting it in.
    done = subprocess.run(["useradd", "--system", "--home-dir", f"/home/{name}",
                           "--no-create-home", "--password", "*", "--shell", "/bin/sh", name],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError("user", f"cannot create the user {name}: {done.stderr.strip()}",
                       hint="the lab runs as root and needs useradd (Debian's passwd package)")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_api_ca() -> tuple[bytes, bytes]:
    """A small CA for Pebble's own API certificate: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("provisioner lab API CA"))
        .issuer_name(_name("provisioner lab API CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_api_cert(ca_cert_pem: bytes, ca_key_pem: bytes, address: str) -> tuple[bytes, bytes]:
    """Pebble's API server certificate for ``address`` (IP SAN), signed by the lab CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pebble"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def api_cert_fits(cert_path: Path, ca_path: Path, address: str) -> bool:
    """True when the existing API certificate names ``address``, is signed by the CA
    file we would hand out, and stays valid for another 30 days."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName) \
            .value.get_values_for_type(x509.IPAddress)
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any unreadable or foreign file means "regenerate"
        return False
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    return ipaddress.ip_address(address) in ips and cert.not_valid_after_utc > soon


def split_pem(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", text, re.S)


def merge_roots(current: str, existing: str, keep: int = MAX_KEPT_ROOTS) -> str:
    """The current Pebble root first, then roots of earlier starts (deduplicated).

    Pebble makes a new root at every start; keeping earlier ones lets certificates
    issued before a lab restart still verify.
    """
    roots: list[str] = []
    for pem in split_pem(current) + split_pem(existing):
        pem = pem.strip() + "\n"
        if pem not in roots:
            roots.append(pem)
    return "".join(roots[:keep])


# =========================================================================== loopback addresses


def _ip(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise LabError("loopback", "the 'ip' command is missing",
                       hint="apt-get install iproute2") from None


def loopback_addresses() -> set[str]:
    result = _ip("-j", "-4", "addr", "show", "dev", "lo")
    if result.returncode != 0:
        raise LabError("loopback", f"'ip addr show dev lo' failed: {result.stderr.strip()}")
    return {info["local"] for iface in json.loads(result.stdout or "[]")
            for info in iface.get("addr_info", []) if "local" in info}


def add_loopback(address: str) -> None:
    result = _ip("addr", "add", f"{address}/32", "dev", "lo")
    if result.returncode != 0 and "File exists" not in result.stderr:
        raise LabError("loopback", f"cannot add {address} to lo: {result.stderr.strip()}",
                       hint="the lab needs root (CAP_NET_ADMIN) to add loopback addresses")


def remove_loopback(address: str) -> None:
    result = _ip("addr", "del", f"{address}/32", "dev", "lo")
    if result.returncode != 0 and "Cannot assign" not in result.stderr:
        raise LabError("loopback", f"cannot remove {address} from lo: {result.stderr.strip()}")


# =========================================================================== processes

_children: dict[int, subprocess.Popen] = {}
"""Servers started by this Python process, so that stopping them also reaps them."""


def read_pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def process_cmdline(pid: int) -> str | None:
    """The command line of a live process (zombies and missing processes: None)."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def process_exe(pid: int) -> str | None:
    """The program file a process runs ("(deleted)" stripped: the package was upgraded)."""
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    return process_cmdline(pid) is not None


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (e.g. sshd's per-connection processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X"):
                parents.setdefault(stat[1], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def namespace_members(pid: int) -> list[int]:
    """Every other live process in the mount namespace of ``pid`` (none when it shares
    this process's namespace: that is the machine's, not a lab host's)."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
        if namespace == os.readlink("/proc/self/ns/mnt"):
            return []
    except OSError:
        return []
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    members.append(int(entry.name))
            except OSError:
                continue
    return members


def terminate(pids: Iterable[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL what is left; reap the ones that are our children."""
    pids = [p for p in pids if _alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for pid in list(_children):
        if _children[pid].poll() is not None:
            del _children[pid]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# =========================================================================== probes


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def probe_dns(address: str, port: int, zone: str, timeout: float = 1.0) -> Probe:
    """SOA query: healthy when the server answers authoritatively for the zone."""
    try:
        response = dns.query.udp(dns.message.make_query(zone, dns.rdatatype.SOA), address,
                                 port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        return Probe(False, f"no answer: {exc.__class__.__name__}")
    if response.rcode() != dns.rcode.NOERROR:
        return Probe(False, f"answered {dns.rcode.to_text(response.rcode())}")
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return Probe(True, f"SOA serial {rrset[0].serial}")
    return Probe(False, "no SOA in the answer")


def probe_ssh(address: str, port: int, timeout: float = 1.0) -> Probe:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            banner = sock.recv(256)
    except OSError as exc:
        return Probe(False, f"no connection: {exc.strerror or exc}")
    if banner.startswith(b"SSH-2.0"):
        return Probe(True, banner.split()[0].decode(errors="replace"))
    return Probe(False, f"unexpected banner {banner[:40]!r}")


def probe_tcp(address: str, ports: Iterable[int], timeout: float = 1.0) -> Probe:
    for port in ports:
        try:
            socket.create_connection((address, port), timeout=timeout).close()
        except OSError as exc:
            return Probe(False, f"port {port}: {exc.strerror or exc}")
    return Probe(True, "accepts on " + ", ".join(str(p) for p in ports))


def probe_acme(url: str, ca_file: Path, timeout: float = 2.0) -> Probe:
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        response = httpx.get(url, verify=context, timeout=timeout)
        directory = response.json() if response.status_code == 200 else {}
    except (OSError, ssl.SSLError, httpx.HTTPError, ValueError) as exc:
        return Probe(False, f"{exc.__class__.__name__}: {exc}")
    if "newNonce" in directory:
        return Probe(True, "directory answers")
    return Probe(False, f"HTTP {response.status_code}, no ACME directory")


# =========================================================================== the lab


@dataclass(frozen=True)
class ServerSpec:
    """How to start one lab server and how to tell it is ours and healthy."""

    name: str  # "ns1", "web1-nginx", ...
    role: str
    address: str  # shown to the user: "127.0.0.10:53"
    argv: tuple[str, ...]
    cwd: Path
    log: Path  # stdout and stderr of the process
    marker: str  # a string unique to this lab in the process's command line (its config path)
    probe: Callable[[float], Probe] = field(compare=False)  # timeout -> result
    env: dict[str, str] = field(default_factory=dict, compare=False)
    extra_logs: tuple[Path, ...] = ()
    program: str | None = None  # what the process runs once started, when not argv[0]
    stage: int = 1  # started after every server of a lower stage answers
    namespace: bool = False  # holds a mount namespace: stopping it stops all inside

    @property
    def executable(self) -> str:
        return self.program or self.argv[0]


@dataclass(frozen=True)
class ServerResult:
    name: str
    role: str
    address: str
    pid: int | None
    action: str  # started | already up | stopped | not running | stale pid file removed


@dataclass(frozen=True)
class UpReport:
    lab_dir: Path
    servers: tuple[ServerResult, ...]
    addresses_added: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class DownReport:
    lab_dir: Path
    servers: tuple[ServerResult, ...]
    addresses_removed: tuple[str, ...]
    ssh_masters_closed: int


@dataclass(frozen=True)
class ServerStatus:
    name: str
    role: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


@dataclass(frozen=True)
class ResetReport:
    lab_dir: Path
    sites_removed: tuple[str, ...]
    files_removed: int
    zone_serial: int
    restarted: tuple[str, ...]
    reloaded: tuple[str, ...]


def _require_lab(settings: Settings) -> LabSettings:
    if settings.lab is None:
        raise LabError("inventory", "group_vars/all.yml has no 'lab' block",
                       hint="the lab needs lab: {dir, ns1, ns2, acme, acme_port}")
    return settings.lab


def _loopback_ipv4(value: str, what: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise LabError(what, f"{value!r} is not an IP address",
                       hint="lab hosts need an IPv4 loopback ansible_host") from None
    if addr.version != 4 or not addr.is_loopback:
        raise LabError(what, f"{value} is not in 127.0.0.0/8", hint="the lab only runs on loopback")
    return str(addr)


class Lab:
    """The lab of one inventory: its servers, their files and their processes."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.settings = inventory.settings
        self.lab = _require_lab(self.settings)
        self.paths = LabPaths(self.lab.dir)
        for name in self.lab.production_hosts:
            if name not in inventory.hosts:
                raise LabError(name, "lab.production_hosts names a host hosts.yml does not have",
                               hint="name hosts of the inventory")
        self.hosts = [h for h in inventory.hosts.values()
                      if h.lab or h.name in self.lab.production_hosts]
        if self.settings.primary.address != self.lab.ns1:
            raise LabError("ns1", f"dns_primary is {self.settings.primary.address} but the lab's "
                                  f"ns1 is {self.lab.ns1}",
                           hint="make dns_primary.address equal lab.ns1")
        for name in ("ns1", "ns2", "acme"):
            _loopback_ipv4(getattr(self.lab, name), name)
        for host in self.hosts:
            _loopback_ipv4(host.ssh_address, host.name)
            _loopback_ipv4(host.public_ipv4, host.name)

    # ------------------------------------------------------------------ description

    def production(self, host: Host) -> bool:
        """A production-shaped host: its own mount namespace, Debian's paths, a sudo user."""
        return host.name in self.lab.production_hosts

    def local(self, host: Host, path: Path) -> Path:
        """Where one of a host's paths lives on this machine (the lab's side of a mount)."""
        return self.paths.host(host).outside(path) if self.production(host) else Path(path)

    @property
    def acme_ca_file(self) -> Path:
        return self.settings.acme.ca_bundle or self.paths.default_api_ca

    @property
    def acme_directory_url(self) -> str:
        return f"https://{self.lab.acme}:{self.lab.acme_port}/dir"

    def addresses(self) -> list[str]:
        """Every loopback address a lab server listens on, in start order."""
        wanted = [self.lab.ns1, self.lab.ns2, *([self.lab.pdns] if self.lab.pdns else [])]
        for host in self.hosts:
            wanted += [host.ssh_address, host.public_ipv4]
        wanted.append(self.lab.acme)
        return list(dict.fromkeys(wanted))

    def key_name(self) -> str:
        if self.settings.tsig_key_file.exists():
            return load_tsig_key(self.settings.tsig_key_file).name
        return f"{self.settings.inventory_id}-lab"

    def servers(self) -> list[ServerSpec]:
        """Every lab server, ns1 first (ns2 transfers from it)."""
        ep = dns_endpoints(self.settings)
        zone = self.settings.zone
        specs = []
        for name, address, port in (("ns1", ep.ns1, ep.ns1_port), ("ns2", ep.ns2, ep.ns2_port)):
            conf = self.paths.named_conf(name)
            specs.append(ServerSpec(
                name=name,
                role="DNS primary" if name == "ns1" else "DNS secondary",
                address=f"{address}:{port}",
                argv=(NAMED_BINARY, "-f", "-4", "-c", str(conf)),
                cwd=self.paths.ns_dir(name),
                log=self.paths.ns_dir(name) / "named.out",
                marker=str(conf),
                probe=lambda t, a=address, p=port: probe_dns(a, p, zone, t),
                extra_logs=(self.paths.ns_dir(name) / "named.log",),
                stage=0 if name == "ns1" else 1,  # ns2 transfers from ns1 as it starts
            ))
        if self.lab.pdns:
            specs.append(ServerSpec(
                name="pdns",
                role="DNS primary (PowerDNS)",
                address=f"{self.lab.pdns}:53",
                argv=(PDNS_BINARY, f"--config-dir={self.paths.pdns_dir}"),
                cwd=self.paths.pdns_dir,
                log=self.paths.pdns_dir / "pdns.log",
                marker=str(self.paths.pdns_dir),
                probe=lambda t, a=self.lab.pdns: probe_dns(a, 53, zone, t),
            ))
        specs += [self._sshd_spec(host) for host in self.hosts]
        specs += [self._nginx_spec(host) for host in self.hosts]
        specs.append(ServerSpec(
            name="acme",
            role="ACME CA (Pebble)",
            address=f"{self.lab.acme}:{self.lab.acme_port}",
            argv=(PEBBLE_BINARY, "-config", str(self.paths.pebble_config),
                  "-dnsserver", f"{ep.ns1}:{ep.ns1_port}"),
            cwd=self.paths.pebble_dir,
            log=self.paths.pebble_dir / "pebble.log",
            marker=str(self.paths.pebble_config),
            probe=lambda t: probe_acme(self.acme_directory_url, self.acme_ca_file, t),
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        ))
        return specs

    def on_host(self, host: Host, argv: tuple[str, ...]) -> tuple[str, ...]:
        """A command that runs as the host sees its files: a production-shaped host's
        joins the mount namespace its sshd holds (/proc/0, none, while sshd is down)."""
        if not self.production(host):
            return argv
        holder = self.running_pid(self._sshd_spec(host))
        return (NSENTER_BINARY, f"--mount=/proc/{holder or 0}/ns/mnt", "--", *argv)

    def _sshd_spec(self, host: Host) -> ServerSpec:
        """sshd; on a production-shaped host it starts the mount namespace and holds it."""
        hp = self.paths.host(host)
        argv: tuple[str, ...] = (SSHD_BINARY, "-D", "-e", "-f", str(hp.sshd_config))
        if self.production(host):
            argv = (UNSHARE_BINARY, "--mount", "--propagation", "private", "--", SHELL,
                    str(hp.namespace_script), *argv)
        return ServerSpec(
            name=f"{host.name}-sshd",
            role=f"{host.name} OpenSSH",
            address=f"{host.ssh_address}:{host.ssh_port}",
            argv=argv,
            cwd=hp.dir,
            log=hp.sshd_log,
            marker=str(hp.sshd_config),
            probe=lambda t, a=host.ssh_address, p=host.ssh_port: probe_ssh(a, p, t),
            program=SSHD_BINARY,
            namespace=self.production(host),
        )

    def _nginx_spec(self, host: Host) -> ServerSpec:
        """nginx; on a production-shaped host it joins the namespace sshd holds and runs
        from /etc/nginx/nginx.conf there (``-p``, a prefix its config never uses, makes
        the command line this lab's own)."""
        hp = self.paths.host(host)
        error_log = host.log_dir / "error.log"
        argv: tuple[str, ...] = (host.nginx_binary, "-c", str(host.nginx_main_config),
                                 "-e", str(error_log), "-g", "daemon off;")
        marker, stage = str(host.nginx_main_config), 1
        if not self.production(host) and hp.nginx_namespace_script.exists():
            argv = (UNSHARE_BINARY, "--mount", "--propagation", "private", "--", SHELL,
                    str(hp.nginx_namespace_script), *argv)
        if self.production(host):
            marker, stage = f"{hp.dir}/", 2
            argv = self.on_host(host, (host.nginx_binary, "-p", f"{hp.dir}/", "-c",
                                       str(host.nginx_main_config), "-g", "daemon off;"))
            error_log = hp.outside(Path("/var/log/nginx/error.log"))
        return ServerSpec(
            name=f"{host.name}-nginx",
            role=f"{host.name} nginx",
            address=f"{host.public_ipv4}:80,443",
            argv=argv,
            cwd=hp.dir,
            log=hp.dir / "nginx.out",
            marker=marker,
            probe=lambda t, a=host.public_ipv4: probe_tcp(a, (80, 443), t),
            extra_logs=(error_log,),
            program=host.nginx_binary,
            stage=stage,
        )

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible(-runner) against the lab hosts.

        Control sockets and temp files stay in the lab dir, so ``lab down`` can close
        ControlPersist masters and nothing lands in ~/.ansible.
        """
        known_hosts = self.settings.known_hosts_file
        return {
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.paths.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.paths.ansible_local_tmp),
            "ANSIBLE_REMOTE_TEMP": str(self.paths.ansible_remote_tmp),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": (f"-o ControlMaster=auto -o ControlPersist=60s "
                                 f"-o UserKnownHostsFile={known_hosts} "
                                 f"-o StrictHostKeyChecking=yes"),
        }

    def ansible_vars(self) -> dict[str, str]:
        """Extra vars for playbooks against the lab hosts (same machine as the controller)."""
        return {"ansible_remote_tmp": str(self.paths.ansible_remote_tmp)}

    # ------------------------------------------------------------------ files

    def prepare(self) -> None:
        """Create dirs, keys, certificates and configs (idempotent, keeps existing keys)."""
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.paths.run_dir, self.paths.control_dir, self.paths.ansible_local_tmp,
                  self.paths.ansible_remote_tmp):
            d.mkdir(parents=True, exist_ok=True)
        key = ensure_tsig_key(self.settings.tsig_key_file, f"{self.settings.inventory_id}-lab")
        self._prepare_dns(key.name)
        self._prepare_pdns(key)
        if self.settings.backup and self.settings.backup.password_file.is_relative_to(
                self.paths.dir):
            ensure_backup_password(self.settings.backup.password_file)
        self._prepare_hosts()
        self._prepare_pebble()

    def _prepare_dns(self, key_name: str) -> None:
        for name, text in (("ns1", named_primary_conf(self.settings, self.paths, key_name)),
                           ("ns2", named_secondary_conf(self.settings, self.paths, key_name))):
            self.paths.ns_dir(name).mkdir(parents=True, exist_ok=True)
            write_file(self.paths.named_conf(name), text)
        zone_file = self.paths.zone_file("ns1", self.settings.zone)
        if not zone_file.exists():
            self.write_fresh_zone()

    def _prepare_pdns(self, key: TsigKey) -> None:
        """PowerDNS's config and, once, its database: the zone as ns1 starts it, the TSIG
        key (written into the database: a secret never goes on a command line) and the
        zone metadata that lets that key update and transfer the zone."""
        if not self.lab.pdns:
            return
        p = self.paths
        p.pdns_dir.mkdir(parents=True, exist_ok=True)
        write_file(p.pdns_config, pdns_conf(self.settings, p, self.lab.pdns))
        if p.pdns_database.exists():
            return
        try:
            with contextlib.closing(sqlite3.connect(p.pdns_database)) as db:
                db.executescript(PDNS_SCHEMA.read_text())
                db.execute("INSERT INTO tsigkeys (name, algorithm, secret) VALUES (?, ?, ?)",
                           (key.name, key.algorithm, key.secret))
                db.commit()
            zone_file = p.pdns_dir / "zone.db"
            write_file(zone_file, zone_file_text(self.pdns_settings(),
                                                 self.inventory.hosts.values(), int(time.time())))
            zone = self.settings.zone
            self.pdnsutil("load-zone", zone, str(zone_file))
            for kind in PDNS_ZONE_METADATA:
                self.pdnsutil("set-meta", zone, kind, key.name)
            self.pdnsutil("set-meta", zone, "SOA-EDIT-DNSUPDATE", "INCREASE")
        except (OSError, sqlite3.Error, LabError) as exc:
            p.pdns_database.unlink(missing_ok=True)  # the next 'lab up' builds it again
            raise LabError("pdns", f"cannot build the PowerDNS database: {exc}",
                           hint="apt-get install pdns-server pdns-backend-sqlite3") from None

    def pdns_settings(self) -> Settings:
        """The settings of an inventory whose DNS is the lab's PowerDNS: the one primary
        and nameserver of its zone, named pdns.<zone>."""
        server = Nameserver(f"pdns.{self.settings.zone}", self.lab.pdns or "")
        return replace(self.settings, primary=server, nameservers=(server,))

    def pdnsutil(self, *args: str) -> str:
        """Run pdnsutil on the lab's PowerDNS database (zone data and metadata)."""
        try:
            done = subprocess.run([PDNSUTIL, f"--config-dir={self.paths.pdns_dir}", *args],
                                  capture_output=True, text=True, timeout=30)
        except OSError as exc:
            raise LabError("pdns", f"cannot run {PDNSUTIL}: {exc}") from None
        if done.returncode != 0:
            raise LabError("pdns", f"pdnsutil {' '.join(args[:2])} failed: "
                                   f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def write_fresh_zone(self) -> int:
        """Write ns1's initial zone (serial = Unix time, so it always moves forward)."""
        serial = int(time.time())
        text = zone_file_text(self.settings, self.inventory.hosts.values(), serial)
        write_file(self.paths.zone_file("ns1", self.settings.zone), text)
        return serial

    def _prepare_hosts(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        client_keys: dict[Path, str] = {}
        known: dict[str, list[str]] = {}
        for host in self.hosts:
            hp = self.paths.host(host)
            for d in (hp.ssh_dir, hp.run_dir, hp.temp_dir):
                d.mkdir(parents=True, exist_ok=True)
            for d in (host.nginx_main_config.parent, host.nginx_sites_dir, host.web_root,
                      host.acme_webroot, host.tls_dir, host.log_dir,
                      Path(host.sshd.config_dir)):
                self.local(host, d).mkdir(parents=True, exist_ok=True)
            if host.ssh_key_file not in client_keys:
                client_keys[host.ssh_key_file] = ensure_ssh_key(host.ssh_key_file,
                                                                "provisioner-lab")
            write_file(hp.authorized_keys, client_keys[host.ssh_key_file] + "\n")
            if self.production(host):
                self._prepare_namespace(host, hp)
            host_public = ensure_ssh_key(hp.host_key, f"{host.name}-lab-host")
            known[host.name] = known_hosts_lines(host.ssh_address, host.ssh_port, host_public)
            write_file(hp.sshd_config, sshd_config(host, hp, self.production(host)))
            write_file(self.local(host, host.nginx_main_config),
                       nginx_conf(host, hp, self.production(host)))
            if not self.production(host):
                self._prepare_worker_access(host, hp)
        known_hosts = self.settings.known_hosts_file
        existing = known_hosts.read_text() if known_hosts.exists() else ""
        write_file(known_hosts, merge_known_hosts(existing, known))

    def _prepare_worker_access(self, host: Host, hp: HostPaths) -> None:
        """nginx's workers run as www-data: where a folder on the way to the host's files
        is closed to them (the state dir is 0700), nginx starts in a mount namespace of
        its own that opens the way (templates/lab/nginx-namespace.sh.j2); the paths stay
        the same, the state dir stays closed for everyone else."""
        for path in (host.web_root, host.acme_webroot, host.nginx_sites_dir, host.log_dir,
                     host.tls_dir, host.nginx_main_config.parent):
            if not path.resolve().is_relative_to(hp.dir.resolve()):
                raise LabError(host.name, f"{path} is outside the lab's folder {hp.dir}",
                               hint="a lab host keeps its files under lab.dir/<host>")
        cover = closed_ancestor(hp.dir, NGINX_WORKER_USER)
        if cover is None:
            hp.nginx_namespace_script.unlink(missing_ok=True)
        else:
            write_file(hp.nginx_namespace_script, nginx_namespace_script(host, hp, cover), 0o755)

    def _prepare_namespace(self, host: Host, hp: HostPaths) -> None:
        """The folders a production-shaped host's namespace mounts, what Debian puts in
        them (mime.types, sshd's privilege separation dir), the sudo user and its
        drop-in, and the script that mounts them."""
        for mount in NAMESPACE_MOUNTS:
            hp.outside(Path(mount)).mkdir(parents=True, exist_ok=True)
        hp.outside(Path("/run/sshd")).mkdir(mode=0o755, exist_ok=True)
        mime_types = Path("/etc/nginx/mime.types")
        write_file(hp.outside(mime_types), mime_types.read_bytes())
        if host.ssh_user != "root":
            ensure_system_user(host.ssh_user)
            write_file(hp.outside(Path("/etc/sudoers.d") / SUDOERS_DROP_IN),
                       sudoers_drop_in(host.ssh_user), 0o440)
            self._prepare_home(host, hp)
        write_file(hp.namespace_script, namespace_script(host, hp), 0o755)
        self._link_sshd_config(host, hp)

    @staticmethod
    def _link_sshd_config(host: Host, hp: HostPaths) -> None:
        """The host's main sshd config path (Debian's, which ``sshd -t`` is run on before
        a drop-in goes live) names the lab's own config inside the namespace."""
        link = hp.outside(Path(host.sshd.main_config))
        if link.is_symlink() and link.readlink() == hp.sshd_config:
            return
        link.unlink(missing_ok=True)
        link.symlink_to(hp.sshd_config)

    def _prepare_home(self, host: Host, hp: HostPaths) -> None:
        """The sudo user's home in the namespace, with its ~/.ssh/authorized_keys (sshd
        reads it as that user: the lab dir itself may be closed to other users)."""
        user = pwd.getpwnam(host.ssh_user)
        home = hp.outside(Path("/home") / host.ssh_user)
        for d in (home, home / ".ssh"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        write_file(home / ".ssh" / "authorized_keys", hp.authorized_keys.read_text())

    def _prepare_pebble(self) -> None:
        p = self.paths
        p.pebble_dir.mkdir(parents=True, exist_ok=True)
        ca_file = self.acme_ca_file
        if not api_cert_fits(p.api_cert, ca_file, self.lab.acme) or not p.api_key.exists():
            if ca_file.exists() and p.api_ca_key.exists():
                ca_pem, ca_key = ca_file.read_bytes(), p.api_ca_key.read_bytes()
            else:
                ca_pem, ca_key = make_api_ca()
                write_file(p.api_ca_key, ca_key, 0o600)
                write_file(ca_file, ca_pem)
            cert, key = make_api_cert(ca_pem, ca_key, self.lab.acme)
            write_file(p.api_key, key, 0o600)
            write_file(p.api_cert, cert)
        write_file(p.pebble_config, pebble_config(self.lab, p))

    # ------------------------------------------------------------------ processes

    def running_pid(self, spec: ServerSpec) -> int | None:
        """The PID from the lab's PID file, if that process is alive and is this server.

        A PID file can outlive its process and the PID be reused: the process must run
        the server's program and name this lab's config file on its command line.
        """
        pid = read_pid(self.paths.pid_file(spec.name))
        if pid is None:
            return None
        cmdline = process_cmdline(pid)
        exe = process_exe(pid)
        if cmdline and spec.marker in cmdline and exe \
                and os.path.realpath(exe) == os.path.realpath(spec.executable):
            return pid
        return None

    def _spawn(self, spec: ServerSpec) -> int:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "ab") as log:
            log.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} "
                      f"provisioner lab: {' '.join(spec.argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=spec.cwd,
                                        env={**os.environ, **spec.env}, start_new_session=True)
            except OSError as exc:
                raise LabError(spec.name, f"cannot start {spec.argv[0]}: {exc}",
                               hint="is the Debian package installed?") from None
        _children[proc.pid] = proc
        write_file(self.paths.pid_file(spec.name), f"{proc.pid}\n")
        return proc.pid

    def _failure(self, spec: ServerSpec, what: str) -> LabError:
        logs = "\n".join(f"--- {log}:\n{tail(log)}" for log in (spec.log, *spec.extra_logs)
                         if log.exists())
        return LabError(spec.name, f"{what}\n{logs}",
                        hint="fix the cause shown in the log, then run 'provisioner lab up' again")

    def _start(self, specs: list[ServerSpec]) -> list[ServerResult]:
        """Start the servers that are not running, then wait until every one answers.

        Servers already running are waited for too: one started a moment ago by an
        earlier, failed ``lab up`` may still be coming up.
        """
        results: dict[str, ServerResult] = {}
        pending: dict[str, tuple[ServerSpec, int, str]] = {}
        for spec in specs:
            pid = self.running_pid(spec)
            if pid is not None:
                pending[spec.name] = (spec, pid, "already up")
                continue
            self.paths.pid_file(spec.name).unlink(missing_ok=True)
            pending[spec.name] = (spec, self._spawn(spec), "started")
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            for name, (spec, pid, action) in list(pending.items()):
                if not _alive(pid):
                    child = _children.get(pid)
                    code = child.returncode if child else "?"
                    self.paths.pid_file(name).unlink(missing_ok=True)
                    raise self._failure(spec, f"exited during start (exit code {code})")
                if spec.probe(READY_PROBE_TIMEOUT).ok:
                    results[name] = ServerResult(name, spec.role, spec.address, pid, action)
                    del pending[name]
            if pending and time.monotonic() > deadline:
                spec = next(iter(pending.values()))[0]
                raise self._failure(spec, f"no healthy answer within {READY_TIMEOUT:.0f}s")
            if pending:
                time.sleep(0.05)
        return [results[s.name] for s in specs]

    def _stop(self, specs: list[ServerSpec]) -> list[ServerResult]:
        results, pids = [], []
        for spec in specs:
            pid_file = self.paths.pid_file(spec.name)
            pid = self.running_pid(spec)
            if pid is not None:
                pids.append(pid)
                pids += _descendants(pid)  # sshd connections, nginx workers
                if spec.namespace:  # whatever else runs in it: its mounts go with the last
                    pids += namespace_members(pid)
                results.append(ServerResult(spec.name, spec.role, spec.address, pid, "stopped"))
            elif pid_file.exists():
                results.append(ServerResult(spec.name, spec.role, spec.address,
                                            read_pid(pid_file), "stale pid file removed"))
            else:
                results.append(ServerResult(spec.name, spec.role, spec.address, None,
                                            "not running"))
        terminate(pids)
        for spec in specs:
            self.paths.pid_file(spec.name).unlink(missing_ok=True)
        return results

    # ------------------------------------------------------------------ addresses

    def _recorded_addresses(self) -> list[str]:
        try:
            return list(json.loads(self.paths.addresses_file.read_text())["added"])
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _ensure_addresses(self) -> list[str]:
        present = loopback_addresses()
        recorded = self._recorded_addresses()
        added = []
        for address in self.addresses():
            if address != "127.0.0.1" and address not in present:
                add_loopback(address)
                added.append(address)
                # Record at once: a later failure must not orphan the address.
                write_file(self.paths.addresses_file,
                           json.dumps({"added": sorted(set(recorded + added))}) + "\n")
        return added

    def _remove_addresses(self) -> list[str]:
        present = loopback_addresses()
        removed = []
        for address in self._recorded_addresses():
            if address in present:
                remove_loopback(address)
                removed.append(address)
        self.paths.addresses_file.unlink(missing_ok=True)
        return removed

    # ------------------------------------------------------------------ ssh masters

    def _close_ssh_masters(self) -> int:
        """Close Ansible's ControlPersist masters whose sockets live in the lab dir.

        ``ssh -O exit`` on every socket first; then any ssh process whose command
        line still names a control path in the lab dir is stopped.
        """
        pattern = re.compile(r"ControlPath=\"?" + re.escape(str(self.paths.dir)) + "/")
        masters = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                cmdline = process_cmdline(int(entry.name))
                if cmdline and cmdline.split()[0].endswith("ssh") and pattern.search(cmdline):
                    masters.append(int(entry.name))
        sockets = [s for s in self.paths.control_dir.glob("*") if s.is_socket()]
        for sock in sockets:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
                           capture_output=True, timeout=10)
        terminate(masters)
        return max(len(masters), len(sockets))

    # ------------------------------------------------------------------ commands

    def up(self) -> UpReport:
        """Start every server that is not running; servers already up are left alone."""
        started = time.monotonic()
        self.prepare()
        added = self._ensure_addresses()
        results = []
        for stage in sorted({spec.stage for spec in self.servers()}):
            # Specs again at every stage: a later one names an earlier one's PID.
            results += self._start([s for s in self.servers() if s.stage == stage])
        order = [s.name for s in self.servers()]
        results.sort(key=lambda result: order.index(result.name))
        self.refresh_trust_roots()
        return UpReport(self.paths.dir, tuple(results), tuple(added),
                        round(time.monotonic() - started, 2))

    def down(self) -> DownReport:
        """Stop what the lab started and remove the loopback addresses it added."""
        closed = self._close_ssh_masters()
        results = self._stop(list(reversed(self.servers())))
        removed = self._remove_addresses()
        return DownReport(self.paths.dir, tuple(reversed(results)), tuple(removed), closed)

    def status(self) -> list[ServerStatus]:
        statuses = []
        for spec in self.servers():
            pid = self.running_pid(spec)
            if pid is None:
                stale = self.paths.pid_file(spec.name).exists()
                statuses.append(ServerStatus(spec.name, spec.role, spec.address, None, False,
                                             False, "stale pid file" if stale else "not running"))
                continue
            probe = spec.probe(STATUS_PROBE_TIMEOUT)
            statuses.append(ServerStatus(spec.name, spec.role, spec.address, pid, True,
                                         probe.ok, probe.detail))
        return statuses

    def reset(self) -> ResetReport:
        """Wipe provisioned sites, agency records and installed certificates; keep keys."""
        for host in self.hosts:
            for d in self._wiped_dirs(host):
                if not d.resolve().is_relative_to(self.paths.dir.resolve()):
                    raise LabError(host.name, f"{d} is outside the lab dir {self.paths.dir}",
                                   hint="lab reset only wipes folders inside lab.dir")
        self.prepare()
        sites, removed = [], 0
        for host in self.hosts:
            sites_dir = self.local(host, host.nginx_sites_dir)
            sites += [f"{host.name}:{p.name}" for p in sorted(sites_dir.iterdir())]
            for d in self._wiped_dirs(host):
                removed += _empty_dir(d)
        specs = {s.name: s for s in self.servers()}
        dns_specs = [specs[name] for name in ("ns1", "ns2", "pdns") if name in specs]
        was_running = [s.name for s in dns_specs if self.running_pid(s) is not None]
        self._stop(dns_specs)
        for server in ("ns1", "ns2"):
            zone_file = self.paths.zone_file(server, self.settings.zone)
            for path in (zone_file, zone_file.with_name(zone_file.name + ".jnl")):
                path.unlink(missing_ok=True)
        self.paths.pdns_database.unlink(missing_ok=True)
        serial = self.write_fresh_zone()
        self._prepare_pdns(load_tsig_key(self.settings.tsig_key_file))
        if was_running:
            self._start(dns_specs[:1])
            self._start(dns_specs[1:])
        reloaded = []
        for host in self.hosts:
            if self.running_pid(specs[f"{host.name}-nginx"]) is not None:
                self.reload_nginx(host)  # drops the removed vhosts
                reloaded.append(host.name)
        return ResetReport(self.paths.dir, tuple(sites), removed, serial, tuple(was_running),
                           tuple(reloaded))

    def _wiped_dirs(self, host: Host) -> list[Path]:
        return [self.local(host, d) for d in (host.nginx_sites_dir, host.web_root,
                                              host.acme_webroot, host.tls_dir)]

    def reload_nginx(self, host: Host, timeout: float = STOP_TIMEOUT) -> None:
        """Reload a lab host's nginx exactly as the product does on a web host: return
        once no old worker takes connections; a config nginx kept out is an error.
        A production-shaped host is reloaded over SSH (its nginx is in its namespace)."""
        spec = self._nginx_spec(host)
        if self.running_pid(spec) is None:
            raise LabError(spec.name, "not running", hint="run 'provisioner lab up'")
        if self.production(host):
            try:
                with HostClient(host, self.settings.known_hosts_file) as client:
                    client.reload_nginx()
            except HostError as exc:
                raise self._failure(spec, f"reload failed: {exc}") from None
            return
        nginx = host_agent().Nginx(str(host.nginx_binary), str(host.nginx_main_config))
        ok, output = nginx.reload(settle=timeout)
        if not ok:
            raise self._failure(spec, f"reload failed: {output}")

    # ------------------------------------------------------------------ Pebble roots

    def refresh_trust_roots(self) -> None:
        """Fetch Pebble's issuing root (new at every start) into trust_roots[0]."""
        base = f"https://{self.lab.acme}:{PEBBLE_MANAGEMENT_PORT}"
        context = ssl.create_default_context(cafile=str(self.acme_ca_file))
        try:
            root = httpx.get(f"{base}/roots/0", verify=context, timeout=5)
            intermediate = httpx.get(f"{base}/intermediates/0", verify=context, timeout=5)
            root.raise_for_status()
            intermediate.raise_for_status()
        except httpx.HTTPError as exc:
            raise LabError("acme", f"cannot fetch Pebble's roots from {base}: {exc}") from None
        write_file(self.paths.pebble_intermediates, intermediate.text)
        write_file(self.paths.pebble_dir / "root.pem", root.text)
        if self.settings.trust_roots:
            target = self.settings.trust_roots[0]
            existing = target.read_text() if target.exists() else ""
            write_file(target, merge_roots(root.text, existing))


def _empty_dir(path: Path) -> int:
    """Delete everything inside ``path`` (not ``path`` itself); return how many entries."""
    count = 0
    if not path.is_dir():
        return 0
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        count += 1
    return count
