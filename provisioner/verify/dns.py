"""DNS checks: does the name answer at every authoritative server of its zone, alike?

Read-only queries need no TSIG key, so verification asks the servers directly
(recursion off) through the toolkit's one DNS client, ``provisioner.dns.querier.Querier``,
which never raises: what a server does wrong comes back as an ``Answer`` to judge. The
zone's servers come from its own NS records, asked of the inventory's nameservers; a
name outside the inventory's zone (an ``external:`` agency) finds its zone and servers
through the system resolver. The system resolver is never asked about names inside the
inventory's zone: in the lab only the lab's servers know them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import dns.asyncresolver
import dns.exception

from ..dns.answer import Answer, normalize_name, one_line
from ..dns.querier import Limit, Querier
from ..registry.models import Nameserver as Server
from .model import CheckResult, Status, ip_literal, result, skipped

__all__ = ["Answer", "DNS_CHECKS", "DnsOutcome", "Expected", "Limit", "Querier", "Server",
           "ZoneCache", "ZoneServers", "check_name", "external_zone", "inventory_zone",
           "name_checks", "no_dns"]

DNS_CHECKS = ("dns.resolves", "dns.authoritative", "dns.consistent", "dns.soa_serial",
              "dns.points_to_host")
MAX_LISTED = 8  # values named in a detail; a server may send thousands


@dataclass(frozen=True)
class ZoneServers:
    """The authoritative servers of a zone, with each one's SOA answer."""

    zone: str
    servers: tuple[Server, ...] = ()
    soa: tuple[Answer, ...] = ()
    problem: str | None = None  # discovery failed: why


@dataclass(frozen=True)
class Expected:
    """What the inventory says a name points at: an address (A, and AAAA when the host has
    IPv6) or a host name (CNAME)."""

    record_type: str
    value: str
    ipv6: str | None = None  # with "A": the AAAA every server must give too (normalised)


@dataclass(frozen=True)
class DnsOutcome:
    checks: tuple[CheckResult, ...]
    address: str | None  # where to connect: from an authoritative answer


# =========================================================================== zone servers

async def inventory_zone(zone: str, seeds: tuple[Server, ...], dns_: Querier) -> ZoneServers:
    """The zone's servers from its NS records, asked of the inventory's nameservers."""
    answers = await asyncio.gather(*(dns_.ask(s, zone, "NS") for s in seeds))
    names = sorted({n for a in answers if a.authoritative for n in a.names})
    if not names:
        return ZoneServers(zone, problem="no NS records from " + _reasons(answers))
    by_name = {s.name: s for s in seeds}
    glue_source = next(a.server for a in answers if a.authoritative)
    servers = []
    for name in names:
        if name in by_name:
            servers.append(by_name[name])
            continue
        glue = await dns_.ask(glue_source, name, "A")
        if not glue.addresses:
            return ZoneServers(zone, problem=f"no address for nameserver {name} "
                                             f"({_why(glue)})")
        servers.append(Server(name, glue.addresses[0]))
    return await _with_serials(zone, tuple(servers), dns_)


async def external_zone(name: str, dns_: Querier) -> ZoneServers:
    """The zone of a name outside the inventory, and its servers, via the system resolver."""
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = dns_.timeout
    try:
        zone = await dns.asyncresolver.zone_for_name(name, resolver=resolver)
        ns = await resolver.resolve(zone, "NS")
        servers = []
        for record in sorted(ns, key=lambda r: r.target.to_text()):
            addresses = await resolver.resolve(record.target, "A")
            servers.append(Server(normalize_name(record.target), addresses[0].address))
    except (OSError, dns.exception.DNSException) as exc:
        return ZoneServers(name, problem=f"system resolver: {one_line(exc)}")
    return await _with_serials(normalize_name(zone), tuple(servers), dns_)


async def _with_serials(zone: str, servers: tuple[Server, ...], dns_: Querier) -> ZoneServers:
    soa = await asyncio.gather(*(dns_.ask(s, zone, "SOA") for s in servers))
    return ZoneServers(zone, servers, tuple(soa))


class ZoneCache:
    """Zone servers found once per run and shared by every name checked in it."""

    def __init__(self) -> None:
        self._zones: dict[str, asyncio.Task] = {}

    async def get(self, key: str, discover: Callable[[], Awaitable[ZoneServers]]) -> ZoneServers:
        task = self._zones.get(key)
        if task is None:
            task = self._zones[key] = asyncio.ensure_future(discover())
        if task.done():  # every name after the first: no shield to build
            return task.result()
        return await asyncio.shield(task)


# =========================================================================== checks

async def check_name(name: str, zone: ZoneServers, expected: Expected | None,
                     dns_: Querier) -> DnsOutcome:
    """Ask every authoritative server for the name and judge the answers."""
    if zone.problem:
        why = f"could not find the servers of {zone.zone}: {zone.problem}"
        return DnsOutcome(tuple(result(c, Status.ERROR, why) for c in DNS_CHECKS), None)
    rdtypes = ("A", "AAAA") if expected is not None and expected.ipv6 else ("A",)
    replies = await asyncio.gather(*(dns_.ask(s, name, rdtype) for rdtype in rdtypes
                                     for s in zone.servers))
    count = len(zone.servers)
    answers, ipv6_answers = replies[:count], replies[count:]
    checks = name_checks(name, answers, zone.soa, expected, ipv6_answers)
    answered = [a for a in answers if a.authoritative and a.addresses]
    return DnsOutcome(tuple(checks), answered[0].addresses[0] if answered else None)


def no_dns(why: str) -> DnsOutcome:
    return DnsOutcome(tuple(skipped(DNS_CHECKS, why)), None)


def name_checks(name: str, answers: list[Answer], soa: tuple[Answer, ...],
                expected: Expected | None,
                ipv6_answers: Sequence[Answer] = ()) -> list[CheckResult]:
    """The five DNS checks from the servers' A answers, and their AAAA answers when the
    host has IPv6 (pure)."""
    return [_resolves(name, answers), _authoritative(answers), _consistent(answers),
            _serials(soa), _points_to(answers, expected, ipv6_answers)]


def _resolves(name: str, answers: list[Answer]) -> CheckResult:
    with_address = [a for a in answers if a.addresses]
    if with_address:
        chain = " -> ".join((*with_address[0].cnames, _listing(with_address[0].addresses)))
        return result("dns.resolves", Status.PASS, f"{name} -> {chain}")
    if all(a.error for a in answers):
        return result("dns.resolves", Status.ERROR, "no server answered: " + _reasons(answers))
    return result("dns.resolves", Status.FAIL, f"{name} has no address: " + _reasons(answers))


def _authoritative(answers: list[Answer]) -> CheckResult:
    wrong = [a for a in answers if not a.error and not (a.authoritative and a.addresses)]
    silent = [a for a in answers if a.error]
    if wrong:
        return result("dns.authoritative", Status.FAIL, "missing at " + _reasons(wrong + silent))
    if silent:
        return result("dns.authoritative", Status.ERROR, "could not ask " + _reasons(silent))
    return result("dns.authoritative", Status.PASS,
                  f"answered with AA by {', '.join(a.server.name for a in answers)}")


def _consistent(answers: list[Answer]) -> CheckResult:
    seen = {(a.cnames, a.addresses) for a in answers if a.addresses}
    if len(seen) > 1:
        return result("dns.consistent", Status.FAIL, "servers disagree: " + "; ".join(
            f"{a.server.name}: {_listing(a.addresses)}" for a in answers if a.addresses))
    if not seen:
        return result("dns.consistent", Status.SKIP, "no server has an address to compare")
    count = sum(1 for a in answers if a.addresses)
    return result("dns.consistent", Status.PASS,
                  f"same answer at {count} of {len(answers)} server(s)")


def _serials(soa: tuple[Answer, ...]) -> CheckResult:
    silent = [a for a in soa if a.serial is None]
    serials = {a.serial for a in soa if a.serial is not None}
    listing = ", ".join(f"{a.server.name} {a.serial}" for a in soa if a.serial is not None)
    if len(serials) > 1:
        return result("dns.soa_serial", Status.WARN, f"serials differ ({listing}): "
                      "a secondary has not caught up with the primary")
    if silent:  # fail when a server answered without one, error when none could be asked
        status = Status.ERROR if all(a.error for a in silent) else Status.FAIL
        return result("dns.soa_serial", status, "no SOA from " + _reasons(silent))
    return result("dns.soa_serial", Status.PASS, f"serial {serials.pop()} at every server")


def _points_to(answers: list[Answer], expected: Expected | None,
               ipv6_answers: Sequence[Answer]) -> CheckResult:
    if expected is None:
        return result("dns.points_to_host", Status.SKIP, "not hosted here: no host to compare")
    found = next((a for a in answers if a.addresses), None)
    if found is None:
        return result("dns.points_to_host", Status.SKIP, "the name has no address")
    if expected.record_type == "CNAME":
        ok = expected.value in found.cnames
        seen = " -> ".join(found.cnames) or "no CNAME"
    else:
        ok = found.addresses == (expected.value,)
        seen = _listing(found.addresses)
    status = Status.PASS if ok else Status.FAIL
    detail = f"{seen} ({'the' if ok else 'expected'} {expected.record_type} {expected.value})"
    if expected.ipv6 is None:
        return result("dns.points_to_host", status, detail)
    ipv6_status, ipv6_detail = _points_to_ipv6(expected.ipv6, ipv6_answers)
    if status is Status.PASS:
        status = ipv6_status
    return result("dns.points_to_host", status, f"{detail}; {ipv6_detail}")


def _points_to_ipv6(ipv6: str, answers: Sequence[Answer]) -> tuple[Status, str]:
    """Every server's AAAA answer must be the host's one IPv6 address."""
    wrong = [a for a in answers
             if not a.error and tuple(map(ip_literal, a.addresses)) != (ipv6,)]
    silent = [a for a in answers if a.error]
    if wrong:
        return Status.FAIL, f"AAAA expected {ipv6}: " + "; ".join(
            f"{a.server.name}: {_listing(a.addresses) or _why(a)}" for a in wrong + silent)
    if silent:
        return Status.ERROR, "AAAA: could not ask " + _reasons(silent)
    return Status.PASS, f"AAAA {ipv6} at every server"


def _reasons(answers: list[Answer] | tuple[Answer, ...]) -> str:
    return "; ".join(f"{a.server.name}: {_why(a)}" for a in answers)


def _why(answer: Answer) -> str:
    if answer.error or answer.problem:
        return answer.error or answer.problem or ""
    if answer.rcode not in ("NOERROR", "NXDOMAIN"):
        return f"{answer.rcode} (the server's error answer)"
    if not answer.authoritative:
        return f"{answer.rcode} without the AA flag (not authoritative)"
    return answer.rcode if answer.rcode != "NOERROR" else "no record"


def _listing(values: tuple[str, ...]) -> str:
    shown = ", ".join(values[:MAX_LISTED])
    return shown + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "")
