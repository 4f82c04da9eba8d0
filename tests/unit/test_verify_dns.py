"""The DNS side without servers: responses in, answers out (the one CNAME follower), and
answers in, check statuses out. The client against real misbehaving servers is in
tests/integration/test_dns_hostile.py."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from provisioner.dns.answer import MAX_CNAME_CHAIN, RRset, read_answer
from provisioner.verify.dns import Answer, Expected, Server, name_checks

NS1, NS2 = Server("ns1.paserkab.go.id", "127.0.0.10"), Server("ns2.paserkab.go.id", "127.0.0.11")
NAME = "dinkes.paserkab.go.id"
V4, V6 = "127.0.0.20", "2001:db8::20"


def soa(server: Server, serial: int | None = 7, **why: str) -> Answer:
    if serial is None:
        return Answer(server, "paserkab.go.id", "SOA", **why)
    return Answer(server, "paserkab.go.id", "SOA", "NOERROR", True, rrset=RRset(
        300, (f"ns1.paserkab.go.id. hostmaster.paserkab.go.id. {serial} 3600 600 86400 300",)))


SOA = (soa(NS1), soa(NS2))


def a(server: Server, *addresses: str, error: str | None = None, problem: str | None = None,
      rcode: str = "NOERROR", authoritative: bool = True, rdtype: str = "A") -> Answer:
    if error or problem:
        return Answer(server, NAME, rdtype, error=error, problem=problem)
    return Answer(server, NAME, rdtype, rcode, authoritative,
                  rrset=RRset(60, tuple(addresses)) if addresses else None)


def checks(answers, expected=Expected("A", V4), ipv6_answers=(), soa_answers=SOA):
    return {c.id: (c.status.value, c.detail)
            for c in name_checks(NAME, answers, soa_answers, expected, ipv6_answers)}


def statuses(answers, expected=Expected("A", V4), ipv6_answers=()) -> dict[str, str]:
    return {k: v[0] for k, v in checks(answers, expected, ipv6_answers).items()}


# (A answers, AAAA answers, expected, dns.points_to_host, words in its detail)
CASES = {
    "A only, as the inventory says": (
        [a(NS1, V4), a(NS2, V4)], [], Expected("A", V4), "pass", ["the A 127.0.0.20"]),
    "A and AAAA at every server": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, V6, rdtype="AAAA"), a(NS2, V6, rdtype="AAAA")],
        Expected("A", V4, V6), "pass", ["AAAA 2001:db8::20 at every server"]),
    "AAAA missing at ns2": (
        [a(NS1, V4), a(NS2, V4)], [a(NS1, V6, rdtype="AAAA"), a(NS2, rdtype="AAAA")],
        Expected("A", V4, V6), "fail", ["AAAA expected 2001:db8::20",
                                        "ns2.paserkab.go.id: no record"]),
    "AAAA elsewhere at ns1": (
        [a(NS1, V4), a(NS2, V4)],
        [a(NS1, "2001:db8::99", rdtype="AAAA"), a(NS2, V6, rdtype="AAAA")],
        Expected("A", V4, V6), "fail", ["ns1.paserkab.go.id: 2001:db8::99"]),
    "AAAA not asked: ns2 timed out": (
        [a(NS1, V4), a(NS2, V4)],
        [a(NS1, V6, rdtype="AAAA"), a(NS2, error="no answer within 5s", rdtype="AAAA")],
        Expected("A", V4, V6), "error", ["could not ask ns2.paserkab.go.id"]),
    "wrong A wins over a good AAAA": (
        [a(NS1, "127.0.0.21"), a(NS2, "127.0.0.21")],
        [a(NS1, V6, rdtype="AAAA"), a(NS2, V6, rdtype="AAAA")],
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
    found = statuses([a(NS1, V4), a(NS2, rcode="NXDOMAIN")])
    assert found == {"dns.resolves": "pass", "dns.authoritative": "fail",
                     "dns.consistent": "pass", "dns.soa_serial": "pass",
                     "dns.points_to_host": "pass"}


# (A answers, {check: status}, check whose detail is read, words in it)
JUDGMENTS = {
    "no server answered": (
        [a(NS1, error="no answer within 5s"), a(NS2, error="query failed: Connection refused")],
        {"dns.resolves": "error", "dns.authoritative": "error", "dns.consistent": "skip"},
        "dns.resolves", ["no server answered", "ns1.paserkab.go.id: no answer within 5s",
                         "ns2.paserkab.go.id: query failed: Connection refused"]),
    "one malformed answer, one silent server": (
        [a(NS1, problem="unusable answer: NameTooLong: A DNS name is > 255 octets long."),
         a(NS2, error="no answer within 5s")],
        {"dns.resolves": "fail", "dns.authoritative": "fail"},
        "dns.authoritative", ["missing at ns1.paserkab.go.id: unusable answer: NameTooLong",
                              "ns2.paserkab.go.id: no answer within 5s"]),
    "SERVFAIL at both": (
        [a(NS1, rcode="SERVFAIL"), a(NS2, rcode="SERVFAIL")],
        {"dns.resolves": "fail", "dns.authoritative": "fail"},
        "dns.resolves", ["has no address", "SERVFAIL (the server's error answer)"]),
    "lame: answers without AA": (
        [a(NS1, V4), a(NS2, V4, authoritative=False)],
        {"dns.resolves": "pass", "dns.authoritative": "fail", "dns.consistent": "pass"},
        "dns.authoritative", ["ns2.paserkab.go.id: NOERROR without the AA flag"]),
    "servers disagree": (
        [a(NS1, V4), a(NS2, "127.0.0.99")],
        {"dns.consistent": "fail", "dns.authoritative": "pass"},
        "dns.consistent", ["ns1.paserkab.go.id: 127.0.0.20", "ns2.paserkab.go.id: 127.0.0.99"]),
}


@pytest.mark.parametrize("answers, expected_statuses, check, words", JUDGMENTS.values(),
                         ids=JUDGMENTS.keys())
def test_judgments(answers, expected_statuses, check, words) -> None:
    found = checks(answers)
    assert {c: found[c][0] for c in expected_statuses} == expected_statuses, found
    assert all(w in found[check][1] for w in words), found[check]


def test_thousands_of_addresses_are_listed_briefly() -> None:
    many = tuple(f"127.0.{i // 250}.{i % 250}" for i in range(3000))
    found = checks([a(NS1, *many), a(NS2, *many)])
    assert found["dns.resolves"][1].endswith("and 2992 more") and len(found["dns.resolves"][1]) < 200


@pytest.mark.parametrize("soa_answers, status, words", [
    ((soa(NS1), soa(NS2, 8)), "warn", ["ns1.paserkab.go.id 7, ns2.paserkab.go.id 8"]),
    ((soa(NS1), soa(NS2, None, error="no answer within 5s")), "error",
     ["no SOA from ns2.paserkab.go.id: no answer within 5s"]),
    ((soa(NS1), soa(NS2, None, problem="unusable answer: FormError: bad rdata")), "fail",
     ["no SOA from ns2.paserkab.go.id: unusable answer"]),
], ids=["serials differ", "a server silent", "a server's SOA unusable"])
def test_soa_serials(soa_answers, status, words) -> None:
    found = checks([a(NS1, V4), a(NS2, V4)], soa_answers=soa_answers)["dns.soa_serial"]
    assert found[0] == status and all(w in found[1] for w in words), found


# =========================================================================== reading responses

def _response(qname: str, rdtype: str, *records: tuple[str, str, str],
              rcode: int = dns.rcode.NOERROR, authoritative: bool = True) -> dns.message.Message:
    """A response built by dnspython, read back from its wire form as the client does."""
    response = dns.message.make_response(dns.message.make_query(qname, rdtype))
    if authoritative:
        response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    for owner, record_type, value in records:
        response.answer.append(dns.rrset.from_text(owner + ".", 60, "IN", record_type, value))
    return dns.message.from_wire(response.to_wire())


def test_read_answer_takes_the_records_of_the_type_asked() -> None:
    answer = read_answer(NS1, NAME, "AAAA", _response(NAME, "AAAA", (NAME, "AAAA", V6),
                                                      (NAME, "TXT", '"other"')))
    assert answer.addresses == (V6,) and answer.authoritative and answer.rcode == "NOERROR"
    assert answer.at_name == answer.rrset and answer.unusable is None


def test_read_answer_follows_cnames_in_any_case() -> None:
    web1 = "web1.paserkab.go.id"
    answer = read_answer(NS2, NAME, "A", _response(
        NAME.upper(), "A", (NAME.upper(), "CNAME", "WEB1.paserkab.go.id."),
        (web1, "A", V4), (web1, "A", "127.0.0.9")))
    assert answer.cnames == (web1,) and answer.addresses == (V4, "127.0.0.9")  # as text
    assert answer.at_name is None  # the name itself is an alias, with no A of its own
    cname = read_answer(NS2, NAME, "CNAME", _response(NAME, "CNAME", (NAME, "CNAME", web1 + ".")))
    assert cname.cnames == () and cname.rrset.values == (web1 + ".",)


def test_a_cname_loop_and_an_over_long_chain_are_problems() -> None:
    loop = read_answer(NS1, NAME, "A", _response(
        NAME, "A", (NAME, "CNAME", "a.paserkab.go.id."), ("a.paserkab.go.id", "CNAME", NAME + ".")))
    assert loop.problem == f"a CNAME loop: {NAME} -> a.paserkab.go.id -> {NAME}"
    assert not loop.addresses
    links = [(f"c{i}.paserkab.go.id", "CNAME", f"c{i + 1}.paserkab.go.id.")
             for i in range(MAX_CNAME_CHAIN + 2)]
    chain = read_answer(NS1, "c0.paserkab.go.id", "A", _response(
        "c0.paserkab.go.id", "A", *links, (f"c{MAX_CNAME_CHAIN + 2}.paserkab.go.id", "A", V4)))
    assert chain.problem.startswith(f"over {MAX_CNAME_CHAIN} CNAMEs: c0.paserkab.go.id -> c1.")
    assert not chain.addresses and chain.unusable == chain.problem


def test_serials_and_nameservers_are_read() -> None:
    zone = "paserkab.go.id"
    serial = read_answer(NS1, zone, "SOA", _response(zone, "SOA", (
        zone, "SOA", "ns1.paserkab.go.id. hostmaster.paserkab.go.id. 2026112901 3600 600 86400 300")))
    names = read_answer(NS1, zone, "NS", _response(zone, "NS", (zone, "NS", "NS2.paserkab.go.id."),
                                                   (zone, "NS", "ns1.paserkab.go.id.")))
    assert serial.serial == 2026112901 and names.names == ("ns1.paserkab.go.id",
                                                            "ns2.paserkab.go.id")


@pytest.mark.parametrize("response, why", [
    (_response(NAME, "A", rcode=dns.rcode.SERVFAIL), "query for A answered SERVFAIL"),
    (_response(NAME, "A", (NAME, "A", V4), authoritative=False), "the answer is not authoritative"),
    (_response(NAME, "A", rcode=dns.rcode.NXDOMAIN), None),
], ids=["SERVFAIL", "no AA", "NXDOMAIN"])
def test_what_provisioning_cannot_use(response, why) -> None:
    assert read_answer(NS1, NAME, "A", response).unusable == why
