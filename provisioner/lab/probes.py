"""Health probes of the lab's servers: a DNS SOA query, an SSH banner, TCP ports, Pebble's
ACME directory."""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from ..verify.http import request_once
from ..verify.tls import ProbeFailure

# A server that is still starting does not answer (UDP: no error at all): probe briefly
# and often while waiting, patiently for 'lab status'.
READY_PROBE_TIMEOUT = 0.1
STATUS_PROBE_TIMEOUT = 2.0


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
        response = request_once("GET", url, ssl_context=context, timeout=timeout)
        directory = json.loads(response.body) if response.status == 200 else {}
    except (OSError, ssl.SSLError, ProbeFailure, ValueError) as exc:
        return Probe(False, f"{exc.__class__.__name__}: {exc}")
    if "newNonce" in directory:
        return Probe(True, "directory answers")
    return Probe(False, f"HTTP {response.status}, no ACME directory")

