"""What goes in the lab servers' files: zone, named, PowerDNS, nginx, sshd, Pebble and the
namespace scripts, rendered from templates/lab (pure functions of the inventory,
unit-tested without servers)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import jinja2

from ..dns.tsig import TsigKey
from ..paths import TEMPLATES_DIR
from ..registry.models import Host, LabSettings, Settings
from .layout import NAMESPACE_MOUNTS, HostPaths, LabPaths, require_lab

TEMPLATE_DIR = TEMPLATES_DIR / "lab"
NGINX_WORKER_USER = "www-data"
PEBBLE_MANAGEMENT_PORT = 15000


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

    def endpoint(self, server: str) -> tuple[str, int]:
        """Address and port of "ns1" or "ns2"."""
        return (self.ns1, self.ns1_port) if server == "ns1" else (self.ns2, self.ns2_port)


def dns_endpoints(settings: Settings) -> DnsEndpoints:
    lab = require_lab(settings)
    ns2_port = next((ns.port for ns in settings.nameservers if ns.address == lab.ns2), 53)
    return DnsEndpoints(lab.ns1, settings.primary.port, lab.ns2, ns2_port)


NAMED_TEMPLATES = {"ns1": "named-primary.conf.j2", "ns2": "named-secondary.conf.j2"}


def named_conf(settings: Settings, paths: LabPaths, key_name: str, server: str) -> str:
    """The config of ns1 (the primary) or ns2 (the secondary, transferring from ns1):
    each listens on its own endpoint and names the other's."""
    ep = dns_endpoints(settings)
    address, port = ep.endpoint(server)
    return render(
        NAMED_TEMPLATES[server],
        zone=settings.zone,
        dir=paths.ns_dir(server),
        zone_file=paths.zone_file(server, settings.zone),
        tsig_key_file=settings.tsig_key_file,
        key_name=key_name,
        address=address,
        port=port,
        primary_address=ep.ns1,
        primary_port=ep.ns1_port,
        secondary_address=ep.ns2,
        secondary_port=ep.ns2_port,
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
    return render("sshd_config.j2", host=host.name, address=host.ssh_address,
                  port=host.ssh_port, user=host.ssh_user, host_key=hp.host_key,
                  pid_file="/run/sshd.pid" if production else hp.sshd_pid,
                  authorized_keys=".ssh/authorized_keys" if production else hp.authorized_keys,
                  drop_in_dir=host.sshd.config_dir)


def namespace_script(host: Host, hp: HostPaths) -> str:
    return render("namespace.sh.j2", host=host.name,
                  mounts=[(mount, hp.outside(Path(mount))) for mount in NAMESPACE_MOUNTS])


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
