"""The verifier's DNS side without servers: answers in, check statuses out; and the query
written to the wire by hand, byte for byte what dnspython would send."""

from __future__ import annotations

import asyncio
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.verify import AddressLimiter, run
from provisioner.verify.dns import (
    Answer,
    _Endpoint,
    Expected,
    Querier,
    Question,
    Server,
    name_checks,
    parse_reply,
    read_answer,
)

NS1, NS2 = Server("ns1.paserkab.go.id", "127.0.0.10"), Server("ns2.paserkab.go.id", "127.0.0.11")
NAME = "dinkes.paserkab.go.id"
V4, V6 = "127.0.0.20", "2001:db8::20"
SOA = (Answer(NS1, "NOERROR", True, serial=7), Answer(NS2, "NOERROR", True, serial=7))


def a(server: Server, *addresses: str, error: str | None = None, rcode: str = "NOERROR") -> Answer:
    if error:
        return Answer(server, error=error)
    return Answer(server, rcode, True, addresses=tuple(addresses))


def statuses(answers, expected, ipv6_answers=()) -> dict[str, str]:
    return {c.id: c.status.value for c in name_checks(NAME, answers, SOA, expected, ipv6_answers)}


# (A answers, AAAA answers, expected, dns.points_to_host, words in its detail)
CASES = {
    "A only, as the inventory says": (
        [a(NS1, V4), a(NS2, V4)], [], Expected("A", V4), "pass", ["the A 127.0.0.20"]),
    "A and AAAA at every server": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, V6), a(NS2, V6)], Expected("A", V4, V6), "pass",
        ["AAAA 2001:db8::20 at every server"]),
    "AAAA missing at ns2": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, V6), a(NS2)], Expected("A", V4, V6), "fail",
        ["AAAA expected 2001:db8::20", "ns2.paserkab.go.id: no record"]),
    "AAAA elsewhere at ns1": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, "2001:db8::99"), a(NS2, V6)], Expected("A", V4, V6),
        "fail", ["ns1.paserkab.go.id: 2001:db8::99"]),
    "AAAA not asked: ns2 timed out": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, V6), a(NS2, error="no answer within 5s")],
        Expected("A", V4, V6), "error", ["could not ask ns2.paserkab.go.id"]),
    "wrong A wins over a good AAAA": (
        [a(NS1, "127.0.0.21"), a(NS2, "127.0.0.21")], [a(NS1, V6), a(NS2, V6)],
        Expected("A", V4, V6), "fail", ["expected A 127.0.0.20"]),
    "not hosted here": (
        [a(NS1, V4), a(NS2, V4)], [], None, "skip", ["no host to compare"]),
}


@pytest.mark.parametrize("answers, ipv6_answers, expected, status, words", CASES.values(),
                         ids=CASES.keys())
def test_points_to_host(answers, ipv6_answers, expected, status, words) -> None:
    check = name_checks(NAME, answers, SOA, expected, ipv6_answers)[-1]
    assert check.id == "dns.points_to_host" and check.status.value == status, check.detail
    assert all(w in check.detail for w in words), check.detail


def test_a_name_missing_at_one_server_fails_authoritative_only() -> None:
    found = statuses([a(NS1, V4), a(NS2, rcode="NXDOMAIN")], Expected("A", V4))
    assert found == {"dns.resolves": "pass", "dns.authoritative": "fail",
                     "dns.consistent": "pass", "dns.soa_serial": "pass",
                     "dns.points_to_host": "pass"}


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "SOA", "NS"])
def test_the_question_on_the_wire_is_dnspythons(rdtype: str) -> None:
    question = Question(dns.name.from_text(NAME), dns.rdatatype.from_text(rdtype))
    query = dns.message.make_query(NAME, rdtype)
    query.flags &= ~dns.flags.RD
    query.id = 4660
    assert question.wire(4660) == query.to_wire()


def _response(qname: str, rdtype: str, *records: str, rcode: int = dns.rcode.NOERROR,
              question: bool = True) -> dns.message.Message:
    """A response built by dnspython, to be read back from its wire form."""
    response = dns.message.make_response(dns.message.make_query(qname, rdtype))
    response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    if not question:
        response.question = []
    for text in records:
        response.answer.append(dns.rrset.from_text(qname + ".", 60, "IN", rdtype, text))
    return response


def _reply(message: dns.message.Message):
    return parse_reply(message.to_wire())


def test_answered_by_matches_dnspythons_is_response() -> None:
    question = Question(dns.name.from_text(NAME), dns.rdatatype.AAAA)
    query = dns.message.make_query(NAME, "AAAA")
    for message in (_response(NAME, "AAAA", V6), _response(NAME, "A", V4),
                    _response("dishub.paserkab.go.id", "AAAA", V6), query,
                    _response(NAME, "AAAA", rcode=dns.rcode.REFUSED, question=False)):
        message.id = query.id
        assert question.answered_by(_reply(message)) == query.is_response(message)
    assert question.answered_by(_reply(_response(NAME.upper(), "AAAA", V6)))  # names: any case


def test_read_answer_takes_the_addresses_of_the_type_asked() -> None:
    reply = _reply(_response(NAME, "AAAA", V6))
    answer = read_answer(NS1, Question(dns.name.from_text(NAME), dns.rdatatype.AAAA), reply)
    assert answer.addresses == (V6,) and answer.authoritative and answer.rcode == "NOERROR"


def test_read_answer_follows_cnames_and_reads_serials_and_nameservers() -> None:
    response = _response(NAME, "A")
    response.answer += [
        dns.rrset.from_text(NAME + ".", 60, "IN", "CNAME", "web1.paserkab.go.id."),
        dns.rrset.from_text("web1.paserkab.go.id.", 60, "IN", "A", V4, "127.0.0.9")]
    answer = read_answer(NS2, Question(dns.name.from_text(NAME), dns.rdatatype.A),
                         _reply(response))
    assert answer.cnames == ("web1.paserkab.go.id",) and answer.addresses == (V4, "127.0.0.9")
    soa = _response("paserkab.go.id", "SOA", "ns1.paserkab.go.id. hostmaster.paserkab.go.id. 2026112901 3600 600 86400 300")
    ns = _response("paserkab.go.id", "NS", "ns2.paserkab.go.id.", "ns1.paserkab.go.id.")
    zone = dns.name.from_text("paserkab.go.id")
    assert read_answer(NS1, Question(zone, dns.rdatatype.SOA), _reply(soa)).serial == 2026112901
    assert read_answer(NS1, Question(zone, dns.rdatatype.NS), _reply(ns)).names == (
        "ns1.paserkab.go.id", "ns2.paserkab.go.id")


@pytest.mark.parametrize("cut", [5, 12, 30, -3])
def test_a_cut_reply_is_a_dns_error_not_a_crash(cut: int) -> None:
    wire = _response(NAME, "A", V4).to_wire()
    with pytest.raises(dns.exception.DNSException):
        parse_reply(wire[:cut])


def test_compressed_names_are_read_like_dnspython_reads_them() -> None:
    response = _response(NAME.upper(), "A")  # any case on the wire
    response.answer += [
        dns.rrset.from_text(NAME.upper() + ".", 60, "IN", "CNAME", "WEB1.paserkab.go.id."),
        dns.rrset.from_text("web1.paserkab.go.id.", 60, "IN", "A", V4)]
    wire = response.to_wire()
    assert wire.lower().count(b"paserkab") == 1  # dnspython compressed every later name
    reply = parse_reply(wire)
    assert reply.question == ((tuple(dns.name.from_text(NAME).labels[:-1]), 1, 1),)
    assert [(r[1], r[3]) for r in reply.answer] == [
        (dns.rdatatype.CNAME, (b"web1", b"paserkab", b"go", b"id")), (dns.rdatatype.A, V4)]


HEADER = bytes.fromhex("1234 8400 0001 0001 0000 0000")  # a response: QR, AA; 1 question, 1 answer
QUESTION = b"\x03www\x00\x00\x01\x00\x01"
BROKEN = {
    "pointer forwards": HEADER + b"\xc0\x20\x00\x01\x00\x01",
    "pointer to itself": HEADER + b"\xc0\x0c\x00\x01\x00\x01",
    "label type 0x40": HEADER + b"\x41www\x00\x00\x01\x00\x01",
    "label past the end": HEADER + b"\x3fwww",
    "A of 3 bytes": HEADER + QUESTION + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x03\x7f\x00\x00",
    "rdata past the end": HEADER + QUESTION + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x09\x7f",
}


@pytest.mark.parametrize("wire", BROKEN.values(), ids=BROKEN.keys())
def test_a_malformed_reply_is_a_form_error(wire: bytes) -> None:
    with pytest.raises(dns.exception.FormError):
        parse_reply(wire)


@given(st.binary(max_size=200), st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_any_bytes_are_a_reply_or_a_form_error(noise: bytes, at: int, patch: bytes) -> None:
    """Random bytes, and a real reply with some bytes overwritten: never another exception."""
    real = _response(NAME, "A", V4).to_wire()
    for wire in (noise, real[:at] + patch + real[at + len(patch):]):
        try:
            parse_reply(wire)
        except dns.exception.FormError:
            pass


def test_a_server_that_never_answers_is_an_error_after_the_timeout() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    server = Server("ns9.paserkab.go.id", "127.0.0.1", silent.getsockname()[1])

    async def ask() -> Answer:
        querier = Querier(0.2, AddressLimiter(8))
        try:
            return await querier.ask(server, NAME, "A")
        finally:
            querier.close()

    try:
        answer = run(ask())
    finally:
        silent.close()
    assert answer.error == "no answer within 0.2s" and not answer.addresses


def test_a_lost_query_is_sent_again_until_answered() -> None:
    """A server that ignores the first datagram of each query, like a lossy network."""
    lossy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lossy.bind(("127.0.0.1", 0))
    server = Server("ns9.paserkab.go.id", "127.0.0.1", lossy.getsockname()[1])
    seen: list[bytes] = []

    class Lossy(asyncio.DatagramProtocol):
        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            seen.append(data)
            if len(seen) > 1:
                query = dns.message.from_wire(data)
                response = dns.message.make_response(query)
                response.flags |= dns.flags.AA
                response.answer.append(dns.rrset.from_text(NAME + ".", 60, "IN", "A", V4))
                self.transport.sendto(response.to_wire(), addr)

    async def ask() -> Answer:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Lossy, sock=lossy)
        querier = Querier(2.0, AddressLimiter(8), resend=0.05)
        try:
            return await querier.ask(server, NAME, "A")
        finally:
            querier.close()
            transport.close()

    answer = run(ask())
    assert answer.addresses == (V4,) and answer.error is None
    assert len(seen) == 2 and seen[0] == seen[1]  # the same query, id and all


class _Answering(asyncio.DatagramProtocol):
    """A loopback DNS server answering every A question with V4."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        response = dns.message.make_response(dns.message.from_wire(data))
        response.flags |= dns.flags.AA
        response.answer.append(dns.rrset.from_text(response.question[0].name, 60, "IN", "A", V4))
        self.transport.sendto(response.to_wire(), addr)


def test_an_id_freed_by_an_answer_stays_with_the_query_that_takes_it(monkeypatch) -> None:
    """Query B starts, and takes id 7, the moment A's answer (id 7) has arrived but before
    A's task resumes: A must not then drop B's waiting answer (seen as a lost ns2 answer
    about once a sweep, before this was fixed)."""
    ids = iter([7, 7])
    monkeypatch.setattr("provisioner.verify.dns.random.getrandbits", lambda bits: next(ids))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = Server("ns9.paserkab.go.id", "127.0.0.1", sock.getsockname()[1])
    second: list[asyncio.Future[Answer]] = []
    received = _Endpoint.datagram_received

    async def ask_two() -> tuple[Answer, Answer]:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _Answering, sock=sock)
        querier = Querier(0.5, AddressLimiter(8))

        def receive(endpoint: _Endpoint, data: bytes, addr) -> None:
            if not second:  # B's first step is scheduled before A's wake-up
                second.append(asyncio.ensure_future(querier.ask(server, "b." + NAME, "A")))
            received(endpoint, data, addr)

        monkeypatch.setattr(_Endpoint, "datagram_received", receive)
        try:
            first = await querier.ask(server, NAME, "A")
            return first, await second[0]
        finally:
            querier.close()
            transport.close()

    first, later = run(ask_two())
    assert (first.error, later.error) == (None, None)
    assert first.addresses == later.addresses == (V4,)
