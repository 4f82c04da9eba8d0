"""``provisioner doctor``: is this inventory ready to go live? Reads only.

Every check is data (``Check``: id, what it looked at, pass / warn / fail / skip, a
one-line detail and a one-line fix). Three groups, run side by side:

* each web host, over its one SSH connection (hosts.py's agent): the host key is
  known, sudo works without a password (non-root logins), nginx's version and
  ``nginx -t``, the TLS protocols the main config allows at the http level (nginx takes a
  listen socket's protocols from its default server, so TLS 1.0/1.1 there is allowed
  for every vhost on the port), ``server_tokens``, free space under the web root, the
  clock against this machine's; and from here: ports 80 and 443 answer on the public
  address;
* DNS: the TSIG key is accepted (a signed update whose prerequisite fails: the server
  checks the key, refuses the update, changes nothing), a signed zone transfer works,
  every nameserver answers with authority and the same SOA serial, the parent's NS
  records name ``nameservers``, CAA lets the configured CA issue;
* ACME: the directory answers, the account exists (asked with onlyReturnExisting, so
  nothing is registered), and whether the CA is staging or production, said plainly.

Pure evaluators (``*_check``) take what was read and return a Check; the rest reads.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import crossplane
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from .dns.answer import normalize_name
from .dns.client import DnsClient, Prerequisite, UpdateBatch
from .errors import ProvisionerError
from .hosts.agent import MIN_FREE_BYTES, HostClient
from .registry.models import Host, Inventory, Nameserver
from .tls.acme import AcmeAccount, existing_account, fetch_directory

STATUSES = ("pass", "warn", "fail", "skip")
PROBE_NAME = "_provisioner-doctor"  # a name whose TXT the TSIG probe says must exist
PORT_TIMEOUT = 3.0
WARN_FREE_BYTES = 1024 * 1024 * 1024
CLOCK_WARN_SECONDS, CLOCK_FAIL_SECONDS = 2.0, 60.0  # TSIG refuses past 300 s (BADTIME)
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
# nginx before 1.23.4 allows TLSv1 and TLSv1.1 when ssl_protocols is not set
MODERN_DEFAULT_NGINX = (1, 23, 4)
LETS_ENCRYPT_CAA = "letsencrypt.org"


@dataclass(frozen=True)
class Check:
    id: str
    target: str  # the host, nameserver, zone or directory looked at
    status: str  # one of STATUSES
    detail: str
    hint: str = ""  # how to fix it (empty when it passes)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "counts": self.counts(),
                "checks": [c.to_dict() for c in self.checks]}


def _error_check(check_id: str, target: str, exc: ProvisionerError, hint: str = "") -> Check:
    return Check(check_id, target, "fail", exc.message, exc.hint or hint)


# =========================================================================== pure evaluators


def http_directives(config: str) -> dict[str, list[str]]:
    """Directive -> arguments (last one wins, as in nginx) at the http level of a main
    config, not following includes; ValueError when it does not parse."""
    parsed = crossplane.parse_string(config, single=True, check_ctx=False, check_args=False)
    if parsed["status"] != "ok":
        errors = parsed["errors"] or parsed["config"][0]["errors"]
        raise ValueError(errors[0]["error"] if errors else "cannot parse")
    found: dict[str, list[str]] = {}
    for block in (d for d in parsed["config"][0]["parsed"] if d["directive"] == "http"):
        for directive in block.get("block", []):
            found[directive["directive"]] = directive["args"]
    return found


def nginx_version(text: str | None) -> tuple[int, ...] | None:
    """(1, 22, 1) from "1.22.1" or "nginx version: nginx/1.22.1"; None when unreadable."""
    words = (text or "").rsplit("/", 1)[-1].split()
    parts = words[0].split(".") if words else []
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def tls_protocols_check(host: str, directives: Mapping[str, list[str]],
                        version: tuple[int, ...] | None) -> Check:
    protocols = directives.get("ssl_protocols")
    hint = ("set 'ssl_protocols TLSv1.2 TLSv1.3;' in the http block of the main nginx "
            "config, then reload")
    if protocols is None:
        if version is not None and version >= MODERN_DEFAULT_NGINX:
            return Check("nginx_tls_protocols", host, "pass",
                         "not set at the http level: this nginx allows TLSv1.2 and TLSv1.3")
        shown = ".".join(map(str, version)) if version else "of unknown version"
        return Check("nginx_tls_protocols", host, "fail",
                     f"not set at the http level: nginx {shown} then allows TLSv1 and TLSv1.1 "
                     "on every vhost of the port", hint)
    old = [p for p in protocols if p in OLD_PROTOCOLS]
    if old:
        return Check("nginx_tls_protocols", host, "fail",
                     f"the http level allows {' '.join(old)} (ssl_protocols "
                     f"{' '.join(protocols)}): every vhost of the port accepts them", hint)
    return Check("nginx_tls_protocols", host, "pass",
                 f"the http level allows {' '.join(protocols)}")


def server_tokens_check(host: str, directives: Mapping[str, list[str]]) -> Check:
    value = (directives.get("server_tokens") or ["on"])[0]
    if value == "off":
        return Check("nginx_server_tokens", host, "pass", "server_tokens off")
    return Check("nginx_server_tokens", host, "warn",
                 f"server_tokens {value}: error pages and the Server header show nginx's "
                 "version", "set 'server_tokens off;' in the http block of the main nginx config")


def disk_check(host: str, web_root: str, free_bytes: int | None) -> Check:
    if free_bytes is None:
        return Check("disk", host, "fail", f"free space under {web_root} unknown",
                     "check that the web root exists")
    shown = f"{free_bytes / 2**30:.1f} GiB free under {web_root}"
    hint = f"free space under {web_root} (agencies' sites, archives, certificates)"
    if free_bytes < MIN_FREE_BYTES:
        return Check("disk", host, "fail", f"only {shown}; onboarding needs "
                                          f"{MIN_FREE_BYTES // 2**20} MiB", hint)
    if free_bytes < WARN_FREE_BYTES:
        return Check("disk", host, "warn", f"only {shown}", hint)
    return Check("disk", host, "pass", shown)


def clock_check(host: str, skew: float) -> Check:
    shown = f"clock {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} this machine"
    hint = "run NTP on both (systemd-timesyncd or chrony)"
    if abs(skew) > CLOCK_FAIL_SECONDS:
        return Check("clock", host, "fail", shown + " (certificates and TSIG need agreeing "
                                                   "clocks)", hint)
    if abs(skew) > CLOCK_WARN_SECONDS:
        return Check("clock", host, "warn", shown, hint)
    return Check("clock", host, "pass", shown)


def serials_check(zone: str, serials: Mapping[str, int | None]) -> Check:
    known = {name: serial for name, serial in serials.items() if serial is not None}
    if len(known) < len(serials):
        return Check("dns_serials", zone, "fail",
                     f"no serial from {', '.join(n for n in serials if n not in known)}",
                     "see the dns_authoritative checks")
    if len(set(known.values())) > 1:
        shown = ", ".join(f"{name} {serial}" for name, serial in sorted(known.items()))
        return Check("dns_serials", zone, "fail", f"serials differ: {shown}",
                     "check the secondaries' zone transfers (notify, allow-transfer)")
    return Check("dns_serials", zone, "pass",
                 f"every nameserver serves serial {next(iter(known.values()), '?')}")


def ns_set_check(zone: str, configured: Iterable[str], at_primary: Iterable[str]) -> Check:
    wanted, served = set(map(normalize_name, configured)), set(map(normalize_name, at_primary))
    if wanted == served:
        return Check("dns_ns_set", zone, "pass", f"the zone's NS records are 'nameservers': "
                                                 f"{', '.join(sorted(served))}")
    return Check("dns_ns_set", zone, "fail",
                 f"the zone's NS records ({', '.join(sorted(served)) or 'none'}) differ from "
                 f"'nameservers' ({', '.join(sorted(wanted))})",
                 "make group_vars nameservers and the zone's NS records the same")


def parent_check(zone: str, configured: Iterable[str], delegated: Iterable[str] | None,
                 parent: str) -> Check:
    if delegated is None:
        return Check("dns_parent_ns", zone, "skip",
                     f"no server of the parent zone {parent} could be asked",
                     "run doctor where the parent's nameservers are reachable")
    wanted, found = set(map(normalize_name, configured)), set(map(normalize_name, delegated))
    if wanted == found:
        return Check("dns_parent_ns", zone, "pass",
                     f"{parent} delegates to {', '.join(sorted(found))}")
    return Check("dns_parent_ns", zone, "fail",
                 f"{parent} delegates to {', '.join(sorted(found)) or 'nothing'}, not to "
                 f"{', '.join(sorted(wanted))}",
                 f"ask the registrar of {zone} to set the NS records to 'nameservers'")


def caa_check(zone: str, records: Sequence[str], identity: str | None, wildcard: bool) -> Check:
    """CAA at the zone's apex (RFC 8659): none lets every CA issue; else the CA's identity
    must be in an issue (issuewild, for a wildcard, when there is any) property."""
    if not records:
        return Check("dns_caa", zone, "pass", "no CAA records: every CA may issue")
    parsed = [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CAA, r) for r in records]
    tags = {"issue": [], "issuewild": []}
    for rdata in parsed:
        tag = rdata.tag.decode("ascii", "replace").lower()
        if tag in tags:
            tags[tag].append(rdata.value.decode("ascii", "replace").split(";")[0].strip())
    tag = "issuewild" if wildcard and tags["issuewild"] else "issue"
    allowed = tags[tag]
    if not allowed and not tags["issuewild"]:
        return Check("dns_caa", zone, "pass", "CAA has no issue property: every CA may issue")
    if identity is None:
        return Check("dns_caa", zone, "warn",
                     f"CAA {tag} allows {', '.join(allowed) or 'no CA'}; the CA's identity "
                     "is unknown", "set acme_caa_identity to the CA's CAA domain")
    if identity.lower() in (a.lower() for a in allowed):
        return Check("dns_caa", zone, "pass", f"CAA {tag} allows {identity}")
    return Check("dns_caa", zone, "fail",
                 f"CAA {tag} allows {', '.join(allowed) or 'no CA'}, not {identity}",
                 f'add the record: {zone}. CAA 0 {tag} "{identity}"')


def environment_check(directory: str, lab: bool) -> Check:
    host = (urllib.parse.urlsplit(directory).hostname or "").lower()
    if host.endswith("letsencrypt.org"):
        if "staging" in host:
            return Check("acme_environment", directory, "warn",
                         "Let's Encrypt STAGING: browsers do not trust its certificates",
                         "switch acme_directory to https://acme-v02.api.letsencrypt.org/"
                         "directory once the first agency works")
        return Check("acme_environment", directory, "pass",
                     "Let's Encrypt PRODUCTION: trusted certificates, real rate limits")
    if lab:
        return Check("acme_environment", directory, "pass",
                     "the lab's Pebble: a test CA trusted only inside the lab")
    return Check("acme_environment", directory, "warn",
                 f"not Let's Encrypt ({host}): cannot tell staging from production",
                 "make sure this CA's certificates are trusted by browsers")


def caa_identity(directory: str, configured: str | None) -> str | None:
    if configured:
        return configured
    host = (urllib.parse.urlsplit(directory).hostname or "").lower()
    return LETS_ENCRYPT_CAA if host.endswith("letsencrypt.org") else None


# =========================================================================== hosts


def check_host(inventory: Inventory, host: Host) -> list[Check]:
    """Every check of one web host: one SSH connection; ports from here."""
    checks = [ports_check(host)]
    client = HostClient(host, inventory.settings.known_hosts_file)
    try:
        client.connect()
    except ProvisionerError as exc:
        return [_error_check("ssh", host.name, exc), *checks,
                *(Check(i, host.name, "skip", "not checked: no SSH connection")
                  for i in ("sudo", "nginx", "nginx_tls_protocols", "nginx_server_tokens",
                            "disk", "clock"))]
    try:
        checks.insert(0, Check("ssh", host.name, "pass",
                               f"{host.ssh_user}@{host.ssh_address}:{host.ssh_port}, host key "
                               "known"))
        checks += _through_agent(client, host)
    finally:
        client.close()
    return checks


def _through_agent(client: HostClient, host: Host) -> list[Check]:
    try:
        preflight = client.preflight()
        started = time.time()
        config, host_time = client.doctor_facts()
        skew = host_time - (started + time.time()) / 2
    except ProvisionerError as exc:
        sudo = host.ssh_user != "root"
        failed = _error_check("sudo" if sudo else "agent", host.name, exc,
                              "let the user run sudo without a password" if sudo else "")
        return [failed, *(Check(i, host.name, "skip", "not checked: the host agent did not run")
                          for i in ("nginx", "nginx_tls_protocols", "nginx_server_tokens",
                                    "disk", "clock"))]
    checks = [sudo_check(host, preflight.uid), nginx_check(host, preflight)]
    checks += config_checks(host, config, nginx_version(preflight.nginx_version))
    checks.append(disk_check(host.name, str(host.web_root),
                             preflight.free_bytes.get(str(host.web_root))))
    checks.append(clock_check(host.name, skew))
    return checks


def sudo_check(host: Host, uid: int) -> Check:
    if host.ssh_user == "root":
        return Check("sudo", host.name, "skip", "logs in as root: no sudo needed")
    if uid != 0:
        return Check("sudo", host.name, "fail", f"commands run as uid {uid}, not root",
                     f"give {host.ssh_user} password-less sudo")
    return Check("sudo", host.name, "pass", f"{host.ssh_user} runs sudo without a password")


def nginx_check(host: Host, preflight: Any) -> Check:
    if not preflight.nginx_version:
        return Check("nginx", host.name, "fail", f"nginx not found at {host.nginx_binary}",
                     "install nginx or fix nginx_binary")
    if not preflight.nginx_test_ok:
        last = (preflight.nginx_test_output.strip().splitlines() or ["?"])[-1]
        return Check("nginx", host.name, "fail", f"{preflight.nginx_version}: nginx -t fails: "
                                                f"{last}", "fix the config nginx -t names")
    return Check("nginx", host.name, "pass", f"{preflight.nginx_version}, nginx -t ok")


def config_checks(host: Host, config: str | None,
                  version: tuple[int, ...] | None) -> list[Check]:
    where = str(host.nginx_main_config)
    try:
        if config is None:
            raise ValueError(f"{where} is missing or a symlink")
        directives = http_directives(config)
    except ValueError as exc:
        problem = Check("nginx_tls_protocols", host.name, "fail",
                        f"cannot read the main config: {exc}", "check nginx_main_config")
        return [problem, Check("nginx_server_tokens", host.name, "skip",
                               "not checked: the main config is unreadable")]
    return [tls_protocols_check(host.name, directives, version),
            server_tokens_check(host.name, directives)]


def ports_check(host: Host) -> Check:
    addresses = [host.public_ipv4, *([host.public_ipv6] if host.public_ipv6 else [])]
    closed = []
    for address in addresses:
        for port in (80, 443):
            try:
                socket.create_connection((address, port), timeout=PORT_TIMEOUT).close()
            except OSError as exc:
                closed.append(f"{_join(address, port)} ({exc.strerror or exc})")
    if closed:
        return Check("ports", host.name, "fail", f"no answer on {', '.join(closed)}",
                     "start nginx and open ports 80 and 443 in the firewall")
    return Check("ports", host.name, "pass",
                 f"80 and 443 answer on {', '.join(addresses)}")


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# =========================================================================== DNS


def check_dns(inventory: Inventory) -> list[Check]:
    settings = inventory.settings
    client = DnsClient(settings)
    zone = settings.zone
    checks = [tsig_check(client), axfr_check(client)]
    serials: dict[str, int | None] = {}
    for server in settings.nameservers:
        try:
            serials[server.name] = client.soa_serial(server)
            checks.append(Check("dns_authoritative", server.name, "pass",
                                f"answers with authority for {zone}, serial "
                                f"{serials[server.name]}"))
        except ProvisionerError as exc:
            serials[server.name] = None
            checks.append(_error_check("dns_authoritative", server.name, exc))
    checks.append(serials_check(zone, serials))
    try:
        checks.append(ns_set_check(zone, [ns.name for ns in settings.nameservers],
                                   client.query(settings.primary, zone, "NS").names))
    except ProvisionerError as exc:
        checks.append(_error_check("dns_ns_set", zone, exc))
    checks.append(check_parent(inventory))
    try:
        answer = client.query(settings.primary, zone, "CAA")
        checks.append(caa_check(zone, answer.at_name.values if answer.at_name else (),
                                caa_identity(settings.acme.directory,
                                             settings.acme.caa_identity),
                                settings.tls_mode == "dns-01-wildcard"))
    except (ProvisionerError, dns.exception.DNSException) as exc:
        checks.append(Check("dns_caa", zone, "fail", f"cannot read CAA: {exc}"))
    return checks


def tsig_check(client: DnsClient) -> Check:
    """A signed update that must not apply: its prerequisite (a TXT value at a probe name)
    is false, so the server verifies the key, then refuses the update (NXRRSET)."""
    zone = client.zone
    probe = UpdateBatch(zone, (Prerequisite("equals", f"{PROBE_NAME}.{zone}", "TXT",
                                            ('"never"',)),), ())
    target = f"{client.primary.name} ({client.primary.address})"
    try:
        rcode = client.update_rcode(probe)
    except ProvisionerError as exc:
        return _error_check("dns_tsig", target, exc)
    if rcode in ("NXRRSET", "YXRRSET", "NXDOMAIN", "YXDOMAIN"):
        return Check("dns_tsig", target, "pass",
                     f"key {client.key.name!r} accepted (probe refused: {rcode}, nothing "
                     "changed)")
    if rcode == "REFUSED":
        return Check("dns_tsig", target, "fail",
                     f"key {client.key.name!r} may not update {zone} (REFUSED)",
                     "allow the key in the zone's allow-update (BIND) / "
                     "TSIG-ALLOW-DNSUPDATE (PowerDNS)")
    return Check("dns_tsig", target, "fail", f"the signed probe was answered {rcode}",
                 "check the primary's update configuration")


def axfr_check(client: DnsClient) -> Check:
    target = f"{client.primary.name} ({client.primary.address})"
    try:
        state = client.transfer()
    except ProvisionerError as exc:
        return _error_check("dns_axfr", target, exc,
                            "allow the key in allow-transfer (BIND) / TSIG-ALLOW-AXFR "
                            "(PowerDNS)")
    return Check("dns_axfr", target, "pass",
                 f"signed zone transfer: {len(state.records)} names, serial {state.serial}")


def check_parent(inventory: Inventory) -> Check:
    """The parent zone's NS records for the zone, asked of the parent's own servers."""
    settings = inventory.settings
    zone = settings.zone
    parent = zone.split(".", 1)[1] if "." in zone else "."
    configured = [ns.name for ns in settings.nameservers]
    if settings.lab is not None:
        return Check("dns_parent_ns", zone, "skip",
                     f"the lab's zone is not delegated by {parent}: no parent to ask")
    return parent_check(zone, configured, delegated_names(zone, parent_servers(parent)),
                        parent)


def parent_servers(parent: str) -> list[Nameserver]:
    """The parent zone's nameservers, through this machine's resolver (none when it
    cannot say)."""
    try:
        return [Nameserver(str(ns.target), str(address))
                for ns in dns.resolver.resolve(parent, "NS")
                for address in dns.resolver.resolve(ns.target, "A")]
    except dns.exception.DNSException:
        return []


def delegated_names(zone: str, servers: Sequence[Nameserver],
                    timeout: float = PORT_TIMEOUT) -> list[str] | None:
    """The NS names the first parent server that answers gives for ``zone`` (a referral,
    or an answer); None when none answers with any."""
    query = dns.message.make_query(zone, "NS")
    query.flags &= ~dns.flags.RD
    for server in servers:
        try:
            response = dns.query.udp(query, server.address, port=server.port, timeout=timeout)
        except (dns.exception.DNSException, OSError):
            continue
        names = [normalize_name(rdata.target) for rrset in (*response.answer,
                                                            *response.authority)
                 if rrset.rdtype == dns.rdatatype.NS for rdata in rrset]
        if names:
            return names
    return None


# =========================================================================== ACME


def check_acme(inventory: Inventory) -> list[Check]:
    acme = inventory.settings.acme
    checks = [environment_check(acme.directory, inventory.settings.lab is not None)]
    try:
        directory = fetch_directory(acme)
    except ProvisionerError as exc:
        return [*checks, _error_check("acme_directory", acme.directory, exc,
                                      "check acme_directory and that the CA is reachable"),
                Check("acme_account", acme.directory, "skip",
                      "not checked: the directory does not answer")]
    checks.append(Check("acme_directory", acme.directory, "pass",
                        f"answers; new orders at {directory['newOrder']}"))
    checks.append(account_check(inventory))
    return checks


def account_check(inventory: Inventory) -> Check:
    acme = inventory.settings.acme
    key_file = AcmeAccount(inventory.settings, inventory.state_dir).key_file
    if not key_file.exists():
        return Check("acme_account", acme.directory, "warn",
                     "no account key yet: the first certificate order registers the account",
                     "onboard the first agency (on staging first)")
    try:
        uri = existing_account(acme, key_file)
    except ProvisionerError as exc:
        return _error_check("acme_account", acme.directory, exc)
    if uri is None:
        return Check("acme_account", acme.directory, "warn",
                     f"the CA does not know the key in {key_file}: the next order "
                     "registers it again", "nothing to do, unless the account was revoked")
    return Check("acme_account", acme.directory, "pass", f"account {uri}")


# =========================================================================== run


def run(inventory: Inventory) -> DoctorReport:
    """Every check, hosts, DNS and ACME side by side; in a stable order."""
    groups: list[Callable[[], list[Check]]] = [
        *(lambda h=h: check_host(inventory, h) for h in inventory.hosts.values()),
        lambda: check_dns(inventory), lambda: check_acme(inventory)]
    with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
        found = list(pool.map(lambda group: group(), groups))
    return DoctorReport(tuple(check for group in found for check in group))
