"""The certificates the provisioner deals in: what one says of itself (``cert_info``),
which certificate an agency's site needs and where it is installed (``CertTarget``), and
what the controller remembers of each one it issued (``CertRecord`` in
``<state_dir>/certs/``). No key material is ever kept here.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import ProvisionerError
from ..hosts import hostlib

# =========================================================================== certificate facts


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says of itself, read from its PEM. Not the verifier's
    ``verify.model.CertExpiry``, which is only the expiry a verification reports."""

    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    names: tuple[str, ...]  # subjectAltName DNS names
    issuer: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def cert_info(pem: bytes) -> CertInfo:
    """Serial, validity, names and issuer of the first certificate in a PEM chain."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ProvisionerError(f"not a PEM certificate: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc, names=names,
                    issuer=str(issuer[0].value) if issuer else cert.issuer.rfc4514_string())


# =========================================================================== what to have


@dataclass(frozen=True)
class Install:
    """Where one certificate goes on one host."""

    host: str
    fullchain: Path
    key: Path


@dataclass(frozen=True)
class CertTarget:
    """One certificate to have: its names, how it is validated, where it is installed."""

    key: str  # agency slug, or "wildcard.<zone>"
    names: tuple[str, ...]
    challenge: str  # "http-01" or "dns-01"
    installs: tuple[Install, ...]
    agencies: tuple[str, ...]


def wildcard_key(zone: str) -> str:
    return f"wildcard.{zone}"


# =========================================================================== controller records


@dataclass(frozen=True)
class CertRecord:
    """What the controller remembers of an issued certificate (no key material)."""

    key: str
    names: tuple[str, ...]
    serial: str  # hex
    not_before: str  # ISO 8601, UTC
    not_after: str
    issuer: str
    hosts: tuple[str, ...]
    agencies: tuple[str, ...]
    issued_at: str
    directory: str

    @property
    def not_after_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)


def records_dir(state_dir: Path) -> Path:
    return state_dir / "certs"


def make_record(target: CertTarget, info: CertInfo, directory: str,
                now: dt.datetime) -> CertRecord:
    return CertRecord(key=target.key, names=info.names, serial=info.serial_hex,
                      not_before=info.not_before.isoformat(), not_after=info.not_after.isoformat(),
                      issuer=info.issuer, hosts=tuple(i.host for i in target.installs),
                      agencies=target.agencies, issued_at=now.isoformat(timespec="seconds"),
                      directory=directory)


def write_record(state_dir: Path, record: CertRecord) -> Path:
    folder = records_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{record.key}.json"
    hostlib.write_atomic(path, (json.dumps(asdict(record), indent=2) + "\n").encode(), None)
    return path


def read_records(state_dir: Path) -> list[CertRecord]:
    """Every record, by key; unreadable files are reported, not skipped silently."""
    records = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            records.append(CertRecord(**{**data, "names": tuple(data["names"]),
                                         "hosts": tuple(data["hosts"]),
                                         "agencies": tuple(data["agencies"])}))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ProvisionerError(f"{path}: not a certificate record ({exc})",
                                   hint="delete it; 'provisioner renew' writes it again") \
                from None
    return records
