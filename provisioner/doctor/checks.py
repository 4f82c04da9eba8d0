"""What ``provisioner doctor`` reports: ``Check`` and ``DoctorReport``, and the pure
evaluators (``*_check``) that take what was read and return a Check."""

from __future__ import annotations

import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import crossplane
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from ..dns.answer import normalize_name
from ..errors import ProvisionerError
from ..hosts.agent import MIN_FREE_BYTES

STATUSES = ("pass", "warn", "fail", "skip")
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


def error_check(check_id: str, target: str, exc: ProvisionerError, hint: str = "") -> Check:
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
