"""DNS checks: does the name answer at every authoritative server of its zone, alike?

Read-only queries need no TSIG key, so verification queries the servers directly
(recursion off) with dnspython's async API. The zone's servers come from its own NS
records, asked of the inventory's nameservers; a name outside the inventory's zone
(an ``external:`` agency) finds its zone and servers through the system resolver. The
system resolver is never asked about names inside the inventory's zone: in the lab only
the lab's servers know them.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .model import CheckResult, Status, deadline, ip_literal, result, skipped

DNS_CHECKS = ("dns.resolves", "dns.authoritative", "dns.consistent", "dns.soa_serial",
              "dns.points_to_host")
MAX_CNAME_CHAIN = 8
UDP_RESEND_SECONDS = 1.0  # as a stub resolver does; a loopback or LAN answer takes < 1 ms
_ERRORS_WITHOUT_QUESTION = frozenset({dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP,
                                      dns.rcode.REFUSED})

Limit = Callable[[str], asyncio.Semaphore]  # destination address -> its concurrency slot


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int = 53

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Answer:
    """One server's answer for a name: what it said, or why it could not be asked."""

    server: Server
    rcode: str | None = None  # None: no answer (see error)
    authoritative: bool = False
    addresses: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()  # the CNAME chain, in order
    serial: int | None = None  # for SOA queries
    names: tuple[str, ...] = ()  # for NS queries
    error: str | None = None


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


# =========================================================================== queries

class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket to one server; answers are matched to waiting queries by message id."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        future = self.waiting.pop(int.from_bytes(data[:2], "big"), None) if len(data) >= 12 \
            else None
        if future and not future.done():
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(exc)
        self.waiting.clear()


Labels = tuple[bytes, ...]  # a name's labels, lower-cased, without the root
ADDRESS_FAMILIES = {dns.rdatatype.A: (socket.AF_INET, 4),  # type -> (family, data length)
                    dns.rdatatype.AAAA: (socket.AF_INET6, 16)}


@dataclass(frozen=True)
class Question:
    """One non-recursive IN query, written to the wire directly: dnspython's Message and
    renderer cost more CPU than the rest of a query (two per site in a sweep)."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType

    @functools.cached_property
    def labels(self) -> Labels:
        return tuple(label.lower() for label in self.name.labels if label)

    def wire(self, query_id: int) -> bytes:
        """Header (the id, no flags: RD off; one question) and the question."""
        return (struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 0) + self.name.to_wire()
                + struct.pack("!HH", self.rdtype, dns.rdataclass.IN))

    def answered_by(self, reply: Reply) -> bool:
        """As dnspython's Message.is_response (the id was matched on receipt)."""
        if not reply.flags & dns.flags.QR \
                or dns.opcode.from_flags(reply.flags) != dns.opcode.QUERY:
            return False
        if not reply.question:  # allowed in some error answers
            return reply.rcode in _ERRORS_WITHOUT_QUESTION
        return reply.question == ((self.labels, self.rdtype, dns.rdataclass.IN),)


Record = tuple[Labels, int, int, Any]  # name, type, class, and the data read (see _rdata)


@dataclass(frozen=True)
class Reply:
    """What verification reads of a response: its header flags, question and answer."""

    flags: int
    question: tuple[tuple[Labels, int, int], ...]  # (name, type, class)
    answer: tuple[Record, ...]

    @property
    def rcode(self) -> int:
        return self.flags & 0xF  # no EDNS is sent, so no extended rcode comes back


def parse_reply(wire: bytes) -> Reply:
    """Read the header, question and answer, never the authority and additional sections
    (NS and glue, resent with every answer). Only what verification uses is decoded: a
    fifth of the CPU of dnspython's Message. Raises dns.exception.FormError if malformed."""
    try:
        _, flags, questions, answers, _, _ = struct.unpack_from("!HHHHHH", wire)
        offset, question, answer = 12, [], []
        for _ in range(questions):
            name, offset = _name(wire, offset)
            question.append((name, *struct.unpack_from("!HH", wire, offset)))
            offset += 4
        for _ in range(answers):
            name, offset = _name(wire, offset)
            rdtype, rdclass, _, length = struct.unpack_from("!HHIH", wire, offset)
            offset += 10
            if offset + length > len(wire):
                raise IndexError
            answer.append((name, rdtype, rdclass, _rdata(wire, offset, length, rdtype)))
            offset += length
    except (struct.error, IndexError, ValueError):
        raise dns.exception.FormError("a malformed or cut answer") from None
    return Reply(flags, tuple(question), tuple(answer))


def _name(wire: bytes, offset: int) -> tuple[Labels, int]:
    """The (possibly compressed) name at offset, and the offset after it. Pointers must
    point backwards (RFC 1035 4.1.4), so reading always ends."""
    labels: list[bytes] = []
    after = None
    while True:
        length = wire[offset]
        if length == 0:
            return tuple(labels), offset + 1 if after is None else after
        if length >= 0xC0:
            target = (length & 0x3F) << 8 | wire[offset + 1]
            if target >= offset:
                raise ValueError("a forward compression pointer")
            if after is None:
                after = offset + 2
            offset = target
        elif length > 63:
            raise ValueError("an unknown label type")
        else:
            labels.append(wire[offset + 1:offset + 1 + length].lower())
            offset += 1 + length
            if offset > len(wire):
                raise IndexError


def _rdata(wire: bytes, offset: int, length: int, rdtype: int) -> Any:
    """An address as text (A, AAAA), a name (CNAME, NS), a serial (SOA), else None."""
    family = ADDRESS_FAMILIES.get(rdtype)
    if family is not None:
        if length != family[1]:
            raise ValueError("an address of the wrong length")
        return socket.inet_ntop(family[0], wire[offset:offset + length])
    if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.NS):
        return _name(wire, offset)[0]
    if rdtype == dns.rdatatype.SOA:
        _, offset = _name(wire, offset)  # primary server
        _, offset = _name(wire, offset)  # mailbox
        return struct.unpack_from("!I", wire, offset)[0]
    return None


class Querier:
    """Non-recursive queries for one run: one UDP socket per server shared by every query
    (message ids tell the answers apart), TCP when an answer is truncated, a concurrency
    slot per server address. Creating a socket per query cost more than the query itself
    (0.55 ms of CPU per query, against ~0.1 ms shared). A query not answered within
    ``resend`` seconds is sent again, as stub resolvers do (UDP may lose it), until
    ``timeout``. Build and close it in one loop."""

    def __init__(self, timeout: float, limit: Limit, resend: float = UDP_RESEND_SECONDS):
        self.timeout, self.limit, self.resend = timeout, limit, resend
        self._endpoints: dict[tuple[str, int], asyncio.Future[_Endpoint]] = {}

    async def ask(self, server: Server, qname: str, rdtype: str) -> Answer:
        """One query; a failure becomes an Answer with the error, never raises."""
        try:
            question = Question(dns.name.from_text(qname), dns.rdatatype.from_text(rdtype))
            async with self.limit(server.address):  # waiting for the slot is not late
                response = await self._exchange(server, question)
        except TimeoutError:
            return Answer(server, error=f"no answer within {self.timeout:g}s")
        except (OSError, ValueError, dns.exception.DNSException) as exc:
            return Answer(server, error=f"query failed: {exc}")
        return read_answer(server, question, response)

    async def _exchange(self, server: Server, question: Question) -> Reply:
        endpoint = await self._endpoint(server)
        query_id = random.getrandbits(16)
        while query_id in endpoint.waiting:
            query_id = random.getrandbits(16)
        loop = asyncio.get_running_loop()
        answer = endpoint.waiting[query_id] = loop.create_future()
        wire = question.wire(query_id)
        timers = [deadline(loop, answer, self.timeout)]

        def send() -> None:
            if not answer.done():
                endpoint.transport.sendto(wire)
                timers.append(loop.call_later(self.resend, send))

        try:
            send()
            reply = parse_reply(await answer)
        finally:
            for timer in timers:
                timer.cancel()
            if endpoint.waiting.get(query_id) is answer:  # answered: the id may be taken again
                del endpoint.waiting[query_id]
        if reply.flags & dns.flags.TC:
            async with asyncio.timeout(self.timeout):
                reply = parse_reply(await self._over_tcp(server, wire))
        if not question.answered_by(reply):
            raise dns.exception.FormError("the answer does not match the question")
        return reply

    @staticmethod
    async def _over_tcp(server: Server, query: bytes) -> bytes:
        """The same query over TCP (RFC 1035 4.2.2: each message behind its length)."""
        reader, writer = await asyncio.open_connection(server.address, server.port)
        try:
            writer.write(len(query).to_bytes(2, "big") + query)
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise dns.exception.FormError("the TCP answer was cut short") from None
        finally:
            writer.close()

    async def _endpoint(self, server: Server) -> _Endpoint:
        key = (server.address, server.port)
        if key not in self._endpoints:
            loop = asyncio.get_running_loop()
            self._endpoints[key] = asyncio.ensure_future(loop.create_datagram_endpoint(
                _Endpoint, remote_addr=key))
        try:
            _, endpoint = await asyncio.shield(self._endpoints[key])
        except OSError:
            del self._endpoints[key]
            raise
        return endpoint

    def close(self) -> None:
        for endpoint in self._endpoints.values():
            if endpoint.done() and not endpoint.exception():
                endpoint.result()[0].close()
        self._endpoints.clear()


def read_answer(server: Server, question: Question, reply: Reply) -> Answer:
    """The addresses (A, or AAAA when asked; following CNAMEs), SOA serial or NS names a
    reply holds."""
    records: dict[tuple[Labels, int], list[Any]] = {}
    for name, rdtype, rdclass, data in reply.answer:
        if rdclass == dns.rdataclass.IN:
            records.setdefault((name, rdtype), []).append(data)
    name = question.labels
    address_type = dns.rdatatype.AAAA if question.rdtype == dns.rdatatype.AAAA \
        else dns.rdatatype.A
    cnames: list[str] = []
    for _ in range(MAX_CNAME_CHAIN):
        cname = records.get((name, dns.rdatatype.CNAME))
        if cname is None:
            break
        name = cname[0]
        cnames.append(_labels_text(name))
    soa = records.get((name, dns.rdatatype.SOA))
    return Answer(
        server, rcode=dns.rcode.to_text(reply.rcode),
        authoritative=bool(reply.flags & dns.flags.AA),
        addresses=tuple(sorted(set(records.get((name, address_type), ())))),
        cnames=tuple(cnames),
        serial=soa[0] if soa else None,
        names=tuple(sorted({_labels_text(n) for n in records.get((name, dns.rdatatype.NS), ())})),
    )


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _labels_text(labels: Labels) -> str:
    return _text(dns.name.Name((*labels, b"")))


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
                                             f"({glue.error or glue.rcode})")
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
            servers.append(Server(_text(record.target), addresses[0].address))
    except (OSError, dns.exception.DNSException) as exc:
        return ZoneServers(name, problem=f"system resolver: {exc}")
    return await _with_serials(_text(zone), tuple(servers), dns_)


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
        chain = " -> ".join((*with_address[0].cnames, ", ".join(with_address[0].addresses)))
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
                  f"answered with AA by {', '.join(str(a.server) for a in answers)}")


def _consistent(answers: list[Answer]) -> CheckResult:
    seen = {(a.cnames, a.addresses) for a in answers if a.addresses}
    if len(seen) > 1:
        return result("dns.consistent", Status.FAIL, "servers disagree: " + "; ".join(
            f"{a.server}: {', '.join(a.addresses)}" for a in answers if a.addresses))
    if not seen:
        return result("dns.consistent", Status.SKIP, "no server has an address to compare")
    count = sum(1 for a in answers if a.addresses)
    return result("dns.consistent", Status.PASS,
                  f"same answer at {count} of {len(answers)} server(s)")


def _serials(soa: tuple[Answer, ...]) -> CheckResult:
    silent = [a for a in soa if a.serial is None]
    serials = {a.serial for a in soa if a.serial is not None}
    listing = ", ".join(f"{a.server} {a.serial}" for a in soa if a.serial is not None)
    if len(serials) > 1:
        return result("dns.soa_serial", Status.WARN, f"serials differ ({listing}): "
                      "a secondary has not caught up with the primary")
    if silent:
        return result("dns.soa_serial", Status.ERROR, "no SOA from " + _reasons(silent))
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
        seen = ", ".join(found.addresses)
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
            f"{a.server}: {', '.join(a.addresses) or _why(a)}" for a in wrong + silent)
    if silent:
        return Status.ERROR, "AAAA: could not ask " + _reasons(silent)
    return Status.PASS, f"AAAA {ipv6} at every server"


def _reasons(answers: list[Answer] | tuple[Answer, ...]) -> str:
    return "; ".join(f"{a.server}: {_why(a)}" for a in answers)


def _why(answer: Answer) -> str:
    if answer.error:
        return answer.error
    if not answer.authoritative:
        return f"{answer.rcode} without the AA flag (not authoritative)"
    return answer.rcode if answer.rcode != "NOERROR" else "no record"
