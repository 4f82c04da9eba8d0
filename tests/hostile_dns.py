"""A small DNS server that misbehaves on purpose, for tests: real UDP and TCP on loopback.

It answers each question by the behaviour registered for the question's name (any case);
a name without one is REFUSED without the AA flag, as a server that does not serve it.
A behaviour gets the parsed query and the transport ("udp" or "tcp") and returns the
messages to send back, as wire bytes (none: silence). Replies are built with dnspython,
then altered byte by byte where a test needs a reply dnspython would not write.

    server = hostile_dns.start("127.0.0.1", 0)
    ns = server.zone("hostile.test")                     # NS, SOA and the server's own A
    server.add("nx.hostile.test", hostile_dns.rcode("NXDOMAIN"))
    server.add("www.hostile.test", hostile_dns.KINDS["truncated"]("127.0.0.7"))
    ...                                                  # ask (server.address, server.port)
    server.close()

The server runs in a thread of its own, so that code under test may run its own event
loop; it serves one TCP connection at a time (enough for a test).
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections import Counter
from typing import Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Behaviour = Callable[[dns.message.Message, str], list[bytes]]
TTL = 60
UDP_LIMIT = 512  # what a plain (no EDNS) UDP answer may hold


class HostileDns:
    """The server: ``add`` a behaviour per name, ``close`` when done."""

    def __init__(self, address: str, port: int = 0):
        self.address = address
        self._udp, self._tcp = _bind_pair(address, port)
        self.port = self._udp.getsockname()[1]
        self._behaviours: dict[dns.name.Name, Behaviour] = {}
        self.received: Counter[str] = Counter()  # queries per name (lowercase, no final dot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"hostile-dns:{self.port}",
                                        daemon=True)
        self._thread.start()

    def add(self, name: str, behaviour: Behaviour) -> None:
        self._behaviours[_absolute(name)] = behaviour

    def zone(self, zone: str, serial: int = 1) -> str:
        """Serve ``zone``'s apex (NS naming this server, SOA) and the server's own address;
        returns the server's name, ns1.<zone>."""
        ns = f"ns1.{zone}"
        self.add(zone, records(f"NS {ns}.", f"SOA {ns}. hostmaster.{zone}. {serial} 3600 600 "
                                             "86400 300"))
        self.add(ns, records(f"A {self.address}"))
        return ns

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> HostileDns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ serving

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    if key.fileobj is self._udp:
                        self._datagram()
                    else:
                        self._connection()

    def _datagram(self) -> None:
        wire, peer = self._udp.recvfrom(65535)
        for reply in self._replies(wire, "udp"):
            self._udp.sendto(reply, peer)

    def _connection(self) -> None:
        connection, _ = self._tcp.accept()
        with connection:
            connection.settimeout(2)
            try:
                size = struct.unpack("!H", _read(connection, 2))[0]
                for reply in self._replies(_read(connection, size), "tcp"):
                    connection.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, EOFError):
                pass  # the client went away: nothing to answer

    def _replies(self, wire: bytes, transport: str) -> list[bytes]:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - whatever arrives, the server keeps serving
            return []
        if len(query.question) != 1:
            return []
        self.received[query.question[0].name.to_text(omit_final_dot=True).lower()] += 1
        behaviour = self._behaviours.get(query.question[0].name, refused)
        return behaviour(query, transport)


def start(address: str = "127.0.0.1", port: int = 0) -> HostileDns:
    return HostileDns(address, port)


def _bind_pair(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port (an ephemeral one when port is 0)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((address, port))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((address, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(8)
        return udp, tcp
    raise OSError(f"no free port for both UDP and TCP on {address}")


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


# =========================================================================== replies

def response(query: dns.message.Message, *records: str, rcode: str = "NOERROR",
             authoritative: bool = True, owner: str | None = None) -> dns.message.Message:
    """A response to ``query`` with ``records`` ("TYPE rdata") at the question's name, or
    at ``owner``."""
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.from_text(rcode))
    if authoritative:
        reply.flags |= dns.flags.AA
    name = _absolute(owner) if owner else query.question[0].name
    for record in records:
        rdtype, rdata = record.split(" ", 1)
        reply.answer.append(dns.rrset.from_text(name, TTL, "IN", rdtype, rdata))
    return reply


def with_answer_record(reply: dns.message.Message, rdtype: int, rdata: bytes,
                       rdlength: int | None = None) -> bytes:
    """The reply's wire with one more answer record at the question's name, written by
    hand: ``rdata`` as given, behind an RDLENGTH that may lie."""
    wire = bytearray(reply.to_wire())
    struct.pack_into("!H", wire, 6, struct.unpack_from("!H", wire, 6)[0] + 1)  # ANCOUNT
    record = b"\xc0\x0c" + struct.pack("!HHIH", rdtype, dns.rdataclass.IN, TTL,
                                       len(rdata) if rdlength is None else rdlength)
    return bytes(wire) + record + rdata  # authority and additional are empty: append


# =========================================================================== behaviours

def records(*found: str) -> Behaviour:
    """Authoritative: the records ("TYPE rdata") of the type asked, NOERROR without any;
    a CNAME among them answers every type, as a real server does."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        asked = dns.rdatatype.to_text(query.question[0].rdtype)
        matching = [r for r in found if r.split(" ", 1)[0] in (asked, "CNAME")]
        return [response(query, *matching).to_wire()]
    return behave


def rcode(name: str, authoritative: bool = True) -> Behaviour:
    """An error answer: NXDOMAIN, SERVFAIL, REFUSED..."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        return [response(query, rcode=name, authoritative=authoritative).to_wire()]
    return behave


refused = rcode("REFUSED", authoritative=False)


def lame(address: str) -> Behaviour:
    """A lame server: the records, but without the AA flag (it does not serve the zone)."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        return [response(query, f"A {address}", authoritative=False).to_wire()]
    return behave


def silent(query: dns.message.Message, transport: str) -> list[bytes]:
    """Never answers (UDP or TCP)."""
    return []


def truncated(address: str) -> Behaviour:
    """Over UDP the answer cut at 512 octets inside the answer section (TXT records at the
    name come first, the A last), TC set and the counts left as they were, as some
    servers do; over TCP the whole answer."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        padding = [f'TXT "{i:02d}{"x" * 98}"' for i in range(8)]
        full = response(query, *padding, f"A {address}").to_wire()
        if transport == "tcp":
            return [full]
        cut = bytearray(full[:UDP_LIMIT])
        cut[2] |= 0x02  # TC
        return [bytes(cut)]
    return behave


def long_cname_target(query: dns.message.Message, transport: str) -> list[bytes]:
    """A CNAME whose target is 257 octets long on the wire (the limit is 255)."""
    target = (b"\x3f" + b"a" * 63) * 4 + b"\x00"
    return [with_answer_record(response(query), dns.rdatatype.CNAME, target)]


def short_soa(query: dns.message.Message, transport: str) -> list[bytes]:
    """An SOA whose RDLENGTH covers only its two names: the five numbers follow outside
    the record, where a careless reader would still find a serial."""
    soa = dns.rrset.from_text(query.question[0].name, TTL, "IN", "SOA",
                              "ns1.hostile.test. hostmaster.hostile.test. 7 3600 600 86400 300")
    rdata = soa[0].to_wire()
    return [with_answer_record(response(query), dns.rdatatype.SOA, rdata,
                               rdlength=len(rdata) - 20)]


def cname(*chain: str, address: str | None = None) -> Behaviour:
    """A CNAME chain from the question's name through ``chain`` (each link at the name
    before it), ending at ``address`` when given. A chain back to the name is a loop."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        reply = response(query)
        owner = query.question[0].name
        for target in chain:
            reply.answer.append(dns.rrset.from_text(owner, TTL, "IN", "CNAME", target + "."))
            owner = _absolute(target)
        if address:
            reply.answer.append(dns.rrset.from_text(owner, TTL, "IN", "A", address))
        return [reply.to_wire()]
    return behave


def spoofed(behaviour: Behaviour, address: str) -> Behaviour:
    """Before the real reply, two that are not for this query and carry ``address``: one
    with another id, one with the right id and another question."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        wrong_id = response(query, f"A {address}")
        wrong_id.id = (query.id + 1) % 65536
        other = dns.message.make_query("elsewhere." + str(query.question[0].name), "A")
        other.id = query.id
        wrong_question = response(other, f"A {address}")
        return [wrong_id.to_wire(), wrong_question.to_wire(), *behaviour(query, transport)]
    return behave


def by_type(**behaviours: Behaviour) -> Behaviour:
    """A behaviour per type asked (NS=..., SOA=...); other types: an empty answer."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        asked = dns.rdatatype.to_text(query.question[0].rdtype)
        return behaviours.get(asked, records())(query, transport)
    return behave


def drop_first(behaviour: Behaviour) -> Behaviour:
    """Ignores the first datagram of each query (by id), like a lossy network."""
    seen: set[int] = set()

    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        if transport == "udp" and query.id not in seen:
            seen.add(query.id)
            return []
        return behaviour(query, transport)
    return behave


def garbage(data: bytes) -> Behaviour:
    """``data`` as the reply, whatever it is."""
    def behave(query: dns.message.Message, transport: str) -> list[bytes]:
        return [data]
    return behave


# Kinds of broken DNS by name, for kits that play many: each makes a behaviour for a
# name that should have pointed at ``address``.
KINDS: dict[str, Callable[[str], Behaviour]] = {
    "healthy": lambda address: records(f"A {address}"),
    "nxdomain": lambda address: rcode("NXDOMAIN"),
    "servfail": lambda address: rcode("SERVFAIL"),
    "refused": lambda address: refused,
    "lame": lame,
    "silent": lambda address: silent,
    "truncated": truncated,
    "long-cname": lambda address: long_cname_target,
    "cname-loop": lambda address: cname("loop-a.hostile.test", "loop-b.hostile.test",
                                        "loop-a.hostile.test"),
    "spoofed": lambda address: spoofed(records(f"A {address}"), "127.0.0.66"),
}
