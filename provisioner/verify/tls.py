"""TLS checks on the first hop: chain, name, expiry and protocol version.

The handshake is the one of the connection that carries a site's first HTTPS request
(verify.http), made against the address DNS gave with the agency name as SNI. The SSL
context verifies the chain only: the name is matched here, so a wrong-name certificate
and an untrusted chain are told apart. When the chain does not verify, the request is
made again over an unverified handshake, whose certificate is then judged (its expiry
is still recorded) and whose connection serves the pages.
"""

from __future__ import annotations

import datetime as dt
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import InputError, Problem
from ..tls.names import name_matches
from .model import CertExpiry, CheckResult, Status, result

WARN_DAYS = 21
FAIL_DAYS = 7
OLD_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1")
TLS_CHECKS = ("tls.chain", "tls.name", "tls.expiry", "tls.version")


class ProbeFailure(Exception):
    """A connection that did not happen: ``fail`` (refused) or ``error`` (could not probe)."""

    def __init__(self, status: Status, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TlsContexts:
    """SSL contexts built once per run (loading trust roots is the costly part)."""

    verified: ssl.SSLContext  # chain only; names are matched by name_matches()
    unverified: ssl.SSLContext


def make_contexts(extra_roots: tuple[Path, ...] = ()) -> TlsContexts:
    """The system trust store plus extra roots (the lab's Pebble root, --ca files)."""
    verified = ssl.create_default_context()
    verified.check_hostname = False
    for root in extra_roots:
        try:
            verified.load_verify_locations(cafile=str(root))
        except (OSError, ssl.SSLError) as exc:
            raise InputError([Problem(root, None, "trust root",
                                      f"not a readable PEM certificate file: {exc}")]) from None
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    for context in (verified, unverified):
        context.set_alpn_protocols(["http/1.1"])
    return TlsContexts(verified, unverified)


# =========================================================================== certificate

@dataclass(frozen=True)
class CertFacts:
    not_after: dt.datetime
    names: tuple[str, ...]  # DNS names and IP addresses it is valid for
    subject: str
    issuer: str


@functools.lru_cache(maxsize=1024)
def parse_certificate(der: bytes) -> CertFacts:
    """Parsed once per distinct certificate (many sites share a wildcard certificate)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = (*san.get_values_for_type(x509.DNSName),
                 *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)))
    except x509.ExtensionNotFound:
        names = ()
    return CertFacts(not_after=cert.not_valid_after_utc, names=tuple(n.lower() for n in names),
                     subject=_common_name(cert.subject) or cert.subject.rfc4514_string(),
                     issuer=_common_name(cert.issuer) or cert.issuer.rfc4514_string())


def _common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


# =========================================================================== handshake

@dataclass(frozen=True)
class Handshake:
    """What a TLS handshake showed."""

    chain_problem: str | None  # None: the chain verified
    version: str
    cert: CertFacts | None

    @property
    def verified(self) -> bool:
        return self.chain_problem is None


def handshake_of(ssl_object: ssl.SSLObject | None, chain_problem: str | None) -> Handshake:
    """The certificate and version of an open connection's handshake."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    version = (ssl_object.version() if ssl_object is not None else None) or "unknown"
    return Handshake(chain_problem, version, parse_certificate(der) if der else None)


# =========================================================================== checks

def tls_checks(name: str, connection: Handshake,
               now: dt.datetime) -> tuple[list[CheckResult], CertExpiry]:
    """chain, name, expiry, version from one handshake (pure)."""
    cert = connection.cert
    if cert is None:
        return [result(c, Status.FAIL, "the server sent no certificate")
                for c in TLS_CHECKS[:3]] + [_version(connection)], CertExpiry(None, None)
    days_left = int((cert.not_after - now).total_seconds() // 86400)
    chain = (result("tls.chain", Status.PASS, f"issued by {cert.issuer}")
             if connection.verified else
             result("tls.chain", Status.FAIL, f"{connection.chain_problem} (issuer {cert.issuer})"))
    valid_for = ", ".join(cert.names) or f"CN {cert.subject} only"
    name_ok = name_matches(name, cert.names)
    named = result("tls.name", Status.PASS if name_ok else Status.FAIL,
                   f"{'valid' if name_ok else 'not valid'} for {name} (names: {valid_for})")
    return [chain, named, _expiry(cert.not_after, days_left), _version(connection)], \
        CertExpiry(cert.not_after, days_left)


def _expiry(not_after: dt.datetime, days_left: int) -> CheckResult:
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days_left < 0:
        return result("tls.expiry", Status.FAIL, f"expired on {when}")
    status = Status.FAIL if days_left < FAIL_DAYS else Status.WARN if days_left < WARN_DAYS \
        else Status.PASS
    return result("tls.expiry", status, f"{days_left} days left (until {when})")


def _version(connection: Handshake) -> CheckResult:
    status = Status.FAIL if connection.version in OLD_VERSIONS else Status.PASS
    return result("tls.version", status, connection.version)


def failed_checks(failure: ProbeFailure) -> list[CheckResult]:
    return [result(c, failure.status, failure.detail) for c in TLS_CHECKS]
