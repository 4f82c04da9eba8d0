"""Renewal decisions, certificate facts, targets and records (provisioner/tls/certs.py and
decisions.py): pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner.errors import ProvisionerError
from provisioner.registry.load import load_inventory
from provisioner.tls.certs import (
    CertInfo,
    Install,
    cert_info,
    make_record,
    read_records,
    write_record,
)
from provisioner.tls.decisions import CertDecision, cert_targets, decide, renewal_due

REPO = Path(__file__).resolve().parents[2]
INVENTORY = load_inventory(REPO / "inventory", Path("/nonexistent/provisioner-state"))
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def cert(names=("dinkes.paserkab.go.id",), not_after=NOW + 60 * DAY) -> CertInfo:
    return CertInfo(serial=0xABC, not_before=not_after - 90 * DAY, not_after=not_after,
                    names=tuple(names), issuer="Pebble Intermediate CA")


# --------------------------------------------------------------------------- renewal_due

@pytest.mark.parametrize("not_after,days,due", [
    (NOW + 60 * DAY, 30, False),
    (NOW + 30 * DAY + dt.timedelta(seconds=1), 30, False),
    (NOW + 30 * DAY, 30, True),  # the boundary renews
    (NOW + 29 * DAY, 30, True),
    (NOW + DAY, 0, False),
    (NOW, 0, True),
    (NOW - DAY, 30, True),  # already expired
    (NOW + 89 * DAY, 90, True),
])
def test_renewal_due(not_after, days, due):
    assert renewal_due(not_after, NOW, days) is due


# --------------------------------------------------------------------------- decide

@pytest.mark.parametrize("current,names,days,action,reason", [
    (None, ["dinkes.paserkab.go.id"], 30, "order", "no certificate installed"),
    (cert(), ["dinkes.paserkab.go.id"], 30, "keep", "valid until 2025-07-31 (60 days left)"),
    (cert(not_after=NOW + 10 * DAY), ["dinkes.paserkab.go.id"], 30, "renew",
     "expires in 10 days (renewing within 30)"),
    (cert(not_after=NOW + 10 * DAY), ["dinkes.paserkab.go.id"], 7, "keep",
     "valid until 2025-06-11 (10 days left)"),
    (cert(not_after=NOW - DAY), ["dinkes.paserkab.go.id"], 30, "renew", "expired on 2025-05-31"),
    (cert(names=["dishub.paserkab.go.id"]), ["dinkes.paserkab.go.id"], 30, "renew",
     "does not cover dinkes.paserkab.go.id"),
    (cert(names=["*.paserkab.go.id", "paserkab.go.id"]), ["*.paserkab.go.id", "paserkab.go.id"],
     30, "keep", "valid until 2025-07-31 (60 days left)"),
    (cert(names=["*.paserkab.go.id"]), ["*.paserkab.go.id", "paserkab.go.id"], 30, "renew",
     "does not cover paserkab.go.id"),
])
def test_decide(current, names, days, action, reason):
    # A renewal (for the CA's rate limits) is a renew of a certificate with every name.
    renewal = action == "renew" and not reason.startswith("does not cover")
    assert decide(current, names, NOW, days) == CertDecision(action, reason, renewal)


# --------------------------------------------------------------------------- cert_info

def _pem(names: list[str], serial: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pebble Intermediate CA test")])
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
             .public_key(key.public_key()).serial_number(serial)
             .not_valid_before(NOW - DAY).not_valid_after(NOW + 89 * DAY)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                            critical=False)
             .sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM)


def test_cert_info_reads_the_leaf_of_a_chain():
    leaf = _pem(["dinkes.paserkab.go.id"], 0x1234567890ABCDEF)
    info = cert_info(leaf + _pem(["other"], 7))
    assert info.serial == 0x1234567890ABCDEF and info.serial_hex == "1234567890abcdef"
    assert info.names == ("dinkes.paserkab.go.id",)
    assert info.not_after == NOW + 89 * DAY
    assert info.issuer == "Pebble Intermediate CA test"


def test_cert_info_refuses_what_is_not_a_certificate():
    with pytest.raises(ProvisionerError, match="not a PEM certificate"):
        cert_info(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


# --------------------------------------------------------------------------- targets

def test_http01_targets_one_certificate_per_hosted_agency():
    agencies = [INVENTORY.agencies[s] for s in ("dinkes", "dishub")]
    targets = cert_targets(INVENTORY, agencies)
    assert [(t.key, t.names, t.challenge, t.agencies) for t in targets] == [
        ("dinkes", ("dinkes.paserkab.go.id",), "http-01", ("dinkes",)),
        ("dishub", ("dishub.paserkab.go.id",), "http-01", ("dishub",)),
    ]
    host = INVENTORY.hosts[agencies[0].host]
    assert targets[0].installs == (Install(host.name, host.tls_dir / "dinkes" / "fullchain.pem",
                                           host.tls_dir / "dinkes" / "privkey.pem"),)


def test_wildcard_mode_orders_one_certificate_for_every_host():
    inventory = dataclasses.replace(INVENTORY, settings=dataclasses.replace(
        INVENTORY.settings, tls_mode="dns-01-wildcard"))
    agencies = list(inventory.agencies.values())
    [target] = cert_targets(inventory, agencies)
    assert target.key == "wildcard.paserkab.go.id" and target.challenge == "dns-01"
    assert target.names == ("*.paserkab.go.id", "paserkab.go.id")
    hosts = sorted({a.host for a in agencies if a.hosted})
    assert [i.host for i in target.installs] == hosts
    for install in target.installs:
        tls_dir = inventory.hosts[install.host].tls_dir
        assert install.fullchain == tls_dir / "wildcard.paserkab.go.id" / "fullchain.pem"
    assert set(target.agencies) == {a.slug for a in agencies if a.hosted}


def test_agencies_hosted_elsewhere_get_no_certificate():
    external = dataclasses.replace(INVENTORY.agencies["dinkes"], host=None,
                                   external_url="https://dinkes.example.org/")
    assert cert_targets(INVENTORY, [external]) == []


# --------------------------------------------------------------------------- records

def test_records_round_trip_without_key_material(tmp_path: Path):
    [target] = cert_targets(INVENTORY, [INVENTORY.agencies["dinkes"]])
    record = make_record(target, cert(), "https://acme.test/dir", NOW)
    path = write_record(tmp_path, record)

    assert path == tmp_path / "certs" / "dinkes.json"
    assert read_records(tmp_path) == [record]
    assert record.serial == "abc" and record.not_after_time == NOW + 60 * DAY
    assert "PRIVATE" not in path.read_text()


def test_a_corrupt_record_is_reported(tmp_path: Path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "dinkes.json").write_text("{not json")
    with pytest.raises(ProvisionerError, match="dinkes.json: not a certificate record"):
        read_records(tmp_path)
