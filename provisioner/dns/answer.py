"""What a DNS server answers, as plain data, and how a response is read: the one place
that follows CNAMEs (``read_answer``), for the provisioning client and the verifier's
``Querier`` alike. Queries always go out with recursion off (RD=0, ``query_message``):
the toolkit asks each authoritative server what *it* serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from ..registry.models import Nameserver

MAX_CNAME_CHAIN = 8
MAX_REASON = 200  # characters of an exception's text kept in an Answer


@dataclass(frozen=True)
class RRset:
    """One record set's TTL and values (rdata text, sorted, canonical case)."""

    ttl: int
    values: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    """One server's answer for (name, rdtype): what it said, or why it could not be used.

    ``rrset`` holds the records of the type asked at the end of the CNAME chain
    (``cnames``, in order), at the name itself when it has no CNAME. ``error``: no
    answer came (timeout, network); ``problem``: one came that cannot be used
    (malformed, not a response to the query, a CNAME loop or an over-long chain)."""

    server: Nameserver
    name: str  # as asked, lowercase, no final dot
    rdtype: str
    rcode: str | None = None  # None: no usable answer (see error, problem)
    authoritative: bool = False
    cnames: tuple[str, ...] = ()
    rrset: RRset | None = None
    error: str | None = None
    problem: str | None = None

    @property
    def at_name(self) -> RRset | None:
        """The rrset of exactly (name, rdtype): none when the name is an alias."""
        return None if self.cnames else self.rrset

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.rrset.values if self.rrset and self.rdtype in ("A", "AAAA") else ()

    @property
    def serial(self) -> int | None:
        return int(self.rrset.values[0].split()[2]) if self.rrset and self.rdtype == "SOA" \
            else None

    @property
    def names(self) -> tuple[str, ...]:
        """The servers an NS answer names."""
        return tuple(sorted(normalize_name(v) for v in self.rrset.values)) \
            if self.rrset and self.rdtype == "NS" else ()

    @property
    def unusable(self) -> str | None:
        """Why provisioning cannot take this answer as what the server serves."""
        if self.error or self.problem:
            return self.error or self.problem
        if self.rcode not in ("NOERROR", "NXDOMAIN"):
            return f"query for {self.rdtype} answered {self.rcode}"
        if not self.authoritative:
            return "the answer is not authoritative"
        return None


def normalize_name(name: str | dns.name.Name) -> str:
    return str(name).lower().rstrip(".")


def rdata_text(rdtype: str, rdata: Any) -> str:
    """Canonical text of one rdata: names lowercased and absolute, as the planner writes them."""
    text = rdata.to_text()
    return text.lower() if rdtype in ("CNAME", "NS", "PTR") else text


def rrset_from(rdataset: dns.rdataset.Rdataset) -> RRset:
    rdtype = dns.rdatatype.to_text(rdataset.rdtype)
    return RRset(rdataset.ttl, tuple(sorted(rdata_text(rdtype, rd) for rd in rdataset)))

def absolute_name(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


def query_message(name: str, rdtype: str) -> dns.message.QueryMessage:
    """A question for one authoritative server: recursion off."""
    query = dns.message.make_query(absolute_name(name), rdtype)
    query.flags &= ~dns.flags.RD
    return query


def read_answer(server: Nameserver, name: str, rdtype: str,
                response: dns.message.Message) -> Answer:
    """What a response says about (name, rdtype), following the CNAMEs in its answer."""
    wanted = dns.rdatatype.from_text(rdtype)
    # the question as asked (is_response checked it), spared a parse of the name's text
    qname = response.question[0].name if response.question else absolute_name(name)
    cnames, end, problem = follow_cnames(response, qname, wanted)
    found = None if problem else response.get_rrset(response.answer, end,
                                                    dns.rdataclass.IN, wanted)
    return Answer(server, normalize_name(name), rdtype, dns.rcode.to_text(response.rcode()),
                  bool(response.flags & dns.flags.AA), cnames,
                  rrset_from(found) if found else None, problem=problem)


def follow_cnames(response: dns.message.Message, name: dns.name.Name,
                  rdtype: dns.rdatatype.RdataType
                  ) -> tuple[tuple[str, ...], dns.name.Name, str | None]:
    """The CNAME chain from ``name`` in the answer section, the name it ends at, and why
    it cannot be used (a loop, more than MAX_CNAME_CHAIN links), if so. A question for
    the CNAME itself is answered at the name."""
    visited = [name]  # the question's name, then each target
    while rdtype != dns.rdatatype.CNAME:
        alias = response.get_rrset(response.answer, visited[-1], dns.rdataclass.IN,
                                   dns.rdatatype.CNAME)
        if alias is None:
            break
        target = min(rd.target for rd in alias)  # one target by RFC 1034; pick one steadily
        if target in visited or len(visited) > MAX_CNAME_CHAIN:
            why = "a CNAME loop" if target in visited else f"over {MAX_CNAME_CHAIN} CNAMEs"
            shown = " -> ".join(normalize_name(n) for n in (*visited, target))
            return _texts(visited[1:]), target, f"{why}: {shown}"[:MAX_REASON]
        visited.append(target)
    return _texts(visited[1:]), visited[-1], None


def _texts(names: list[dns.name.Name]) -> tuple[str, ...]:
    return tuple(normalize_name(n) for n in names)


def one_line(exc: BaseException) -> str:
    """An exception as one bounded line (its text may quote what a server sent)."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:MAX_REASON]
