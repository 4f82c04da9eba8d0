"""What a verification produces: check results, the certificate seen, the verdict.

Re-exported by ``provisioner.verify.verifier``; kept in its own module so the check modules
(dns, tls, http, content) can build results without importing the orchestrator.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import Any


def ip_literal(text: str) -> str | None:
    """The IP address a host part spells (normalised), None for a host name."""
    if ":" not in text and not text[-1:].isdigit():
        return None  # a host name: spare the failed parse (an exception), twice a site
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"  # passes, with a remark (advisory header missing, certificate expires soon)
    FAIL = "fail"  # probed, and the site is wrong
    ERROR = "error"  # could not probe (timeout, unreachable server): says nothing about the site
    SKIP = "skip"  # does not apply (an IP address has no DNS name; nothing to connect to)


@dataclass(frozen=True)
class Check:
    """A kind of check: its stable id and what it proves, in English and Indonesian."""

    id: str
    en: str
    id_: str

    def title(self, lang: str) -> str:
        return self.id_ if lang == "id" else self.en


CHECKS: dict[str, Check] = {c.id: c for c in (
    Check("dns.resolves", "name resolves", "nama terdaftar di DNS"),
    Check("dns.authoritative", "every authoritative server answers",
          "dijawab semua server DNS otoritatif"),
    Check("dns.consistent", "same address at every server", "alamat sama di semua server DNS"),
    Check("dns.soa_serial", "zone serials agree", "serial zona DNS sama"),
    Check("dns.points_to_host", "points at the hosting server", "mengarah ke server hosting"),
    Check("http.redirect", "http:// redirects to https://", "http:// dialihkan ke https://"),
    Check("tls.chain", "certificate chain trusted", "rantai sertifikat tepercaya"),
    Check("tls.name", "certificate names the site", "sertifikat sesuai nama situs"),
    Check("tls.expiry", "certificate not expiring soon", "sertifikat belum akan kedaluwarsa"),
    Check("tls.version", "TLS 1.2 or newer", "TLS 1.2 atau lebih baru"),
    Check("https.status", "HTTPS answers 200", "HTTPS menjawab 200"),
    Check("https.hsts", "HSTS for at least 180 days", "HSTS minimal 180 hari"),
    Check("https.headers", "security headers", "header keamanan"),
    Check("https.content", "real content", "konten nyata"),
    Check("publication.persyaratan", "requirements published", "persyaratan dipublikasikan"),
    Check("publication.prosedur", "procedure published", "prosedur dipublikasikan"),
    Check("publication.waktu", "completion time published", "jangka waktu dipublikasikan"),
    Check("publication.biaya", "fee/tariff published", "biaya/tarif dipublikasikan"),
    Check("publication.produk", "service output published", "produk pelayanan dipublikasikan"),
    Check("publication.pengaduan", "complaint handling published",
          "penanganan pengaduan dipublikasikan"),
    Check("publication.maklumat", "service pledge published", "maklumat pelayanan dipublikasikan"),
    Check("publication.lapor", "SP4N-LAPOR! link", "tautan SP4N-LAPOR!"),
    Check("publication.documents", "standards readable on the page, not only as a PDF or image",
          "standar terbaca di halaman, bukan hanya PDF atau gambar"),
)}

# SERVICE_STANDARD.md "What active means": the name resolves at every authoritative
# nameserver, HTTPS answers 200 with a valid certificate for the name, and the page has
# real content. Expiry, HSTS, headers and the http:// redirect are reported, not decisive.
ACTIVE_CHECKS = ("dns.resolves", "dns.authoritative", "dns.consistent",
                 "tls.chain", "tls.name", "https.status", "https.content")
WEB_CHECKS = ("http.redirect", "tls.chain", "tls.name", "tls.expiry", "tls.version",
              "https.status", "https.hsts", "https.headers", "https.content")


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status.value, "detail": self.detail}


def result(check_id: str, status: Status, detail: str) -> CheckResult:
    assert check_id in CHECKS, check_id
    return CheckResult(check_id, status, detail)


def skipped(check_ids: tuple[str, ...] | list[str], why: str) -> list[CheckResult]:
    return [result(c, Status.SKIP, why) for c in check_ids]


@dataclass(frozen=True)
class Evidence:
    """Where an item was found: the page and a snippet of what it shows (at most 160
    characters of the site's own text: escape it wherever it is output)."""

    page: str
    snippet: str

    def __str__(self) -> str:
        return f"{self.page}: {self.snippet}"

    def to_dict(self) -> dict[str, str]:
        return {"page": self.page, "snippet": self.snippet}


@dataclass(frozen=True)
class Publication:
    """The website publication score of one site (not the Ombudsman's grade)."""

    score: float
    band: str
    components: dict[str, bool]
    evidence: dict[str, Evidence]  # item -> where it was found
    pages: tuple[str, ...]  # the pages read
    documents: tuple[str, ...] = ()  # standards seen only as a PDF or an image
    notes: tuple[str, ...] = ()  # what the reading skipped and why (robots.txt, a bad feed)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "components": dict(self.components),
                "evidence": {item: e.to_dict() for item, e in self.evidence.items()},
                "documents": list(self.documents), "notes": list(self.notes)}


@dataclass(frozen=True)
class CertExpiry:
    """The expiry of the certificate a verification saw (None, None: it saw none), as
    reports show it. Not ``tls.certs.CertInfo``, what a certificate says of itself."""

    not_after: dt.datetime | None
    days_left: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": self.days_left}


NO_CERT = CertExpiry(None, None)


@dataclass(frozen=True)
class AgencyResult:
    """Everything one verification found about one site."""

    agency: str | None  # the agency slug; None for a bare URL
    url: str
    checks: tuple[CheckResult, ...]
    publication: Publication
    cert: CertExpiry

    def status(self, check_id: str) -> Status | None:
        return next((c.status for c in self.checks if c.id == check_id), None)

    @property
    def active(self) -> bool:
        """DNS, TLS and HTTPS pass (SERVICE_STANDARD.md); skipped DNS (an IP URL) is allowed."""
        decisive = [self.status(c) for c in ACTIVE_CHECKS]
        return (self.status("https.status") is Status.PASS
                and all(s in (Status.PASS, Status.WARN, Status.SKIP, None) for s in decisive))

    @property
    def has_errors(self) -> bool:
        return any(c.status is Status.ERROR for c in self.checks)

    @property
    def all_pass(self) -> bool:
        """No check failed or could not be run (warnings and skips are fine)."""
        return not any(c.status in (Status.FAIL, Status.ERROR) for c in self.checks)

    def problems(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status in (Status.FAIL, Status.ERROR)]

    def to_dict(self) -> dict[str, Any]:
        """The `verify --format json` document (exactly these keys)."""
        return {
            "agency": self.agency,
            "url": self.url,
            "active": self.active,
            "checks": [c.to_dict() for c in self.checks],
            "publication": self.publication.to_dict(),
            "cert": self.cert.to_dict(),
        }
