"""The one certificate name matcher (provisioner/tls/names.py, RFC 6125 §6.4.3), as the
provisioner's renewal decisions and the verifier's tls.name check both see it."""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.tls.certs import CertInfo
from provisioner.tls.decisions import decide
from provisioner.tls.names import name_matches
from provisioner.verify.model import Status
from provisioner.verify.tls import CertFacts, Handshake, tls_checks

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)

# name, the certificate's names, valid for the name
CASES = [
    ("dinkes.paserkab.go.id", ["dinkes.paserkab.go.id"], True),
    ("DINKES.paserkab.go.id.", ["dinkes.paserkab.go.id"], True),  # case and final dot aside
    ("dinkes.paserkab.go.id", ["DINKES.Paserkab.go.id."], True),
    ("dinkes.paserkab.go.id", ["*.paserkab.go.id"], True),
    ("DINKES.paserkab.go.id", ["*.PASERKAB.go.id"], True),
    ("a.dinkes.paserkab.go.id", ["*.paserkab.go.id"], False),  # one label only
    ("paserkab.go.id", ["*.paserkab.go.id"], False),  # never no label
    ("dinkes.paserkab.go.id", ["*.go.id"], False),
    ("dinkes.paserkab.go.id", [], False),
    ("*.paserkab.go.id", ["*.paserkab.go.id"], True),  # a wildcard target: spelled the same
    ("*.dinkes.paserkab.go.id", ["*.paserkab.go.id"], False),
    ("dinkes.paserkab.go.id", ["dinkes.*.go.id"], False),  # only the leftmost label
    ("dinkes.paserkab.go.id", ["din*.paserkab.go.id"], False),  # no partial wildcard
    ("dinkes.paserkab.go.id", ["*"], False),
    # the cases the provisioner's old matcher ("a wildcard covers one label") got wrong:
    ("a.b", ["*.b"], False),  # a single-label parent: never a wildcard (as OpenSSL, browsers)
    (".b.c", ["*.b.c"], False),  # an empty label is no label
    ("127.0.0.1", ["*.0.0.1"], False),  # an IP address is no DNS name
    # IP addresses match only themselves
    ("127.0.0.1", ["127.0.0.1"], True),
    ("::1", ["::1"], True),
    ("127.0.0.2", ["127.0.0.1"], False),
]


@pytest.mark.parametrize("name, cert_names, valid", CASES)
def test_name_matches(name, cert_names, valid) -> None:
    assert name_matches(name, cert_names) is valid


@pytest.mark.parametrize("name, cert_names, valid", CASES)
def test_the_provisioner_and_the_verifier_agree(name, cert_names, valid) -> None:
    """An installed certificate covers the agency exactly when the verifier's tls.name passes."""
    cert = CertInfo(serial=1, not_before=NOW - dt.timedelta(days=1),
                    not_after=NOW + dt.timedelta(days=60), names=tuple(cert_names),
                    issuer="CA")
    covered = decide(cert, [name], NOW).action == "keep"
    facts = CertFacts(not_after=cert.not_after, names=tuple(n.lower() for n in cert_names),
                      subject=name, issuer="CA")
    checks, _expiry = tls_checks(name, Handshake(None, "TLSv1.3", facts), NOW)
    named = next(c for c in checks if c.id == "tls.name")
    assert (covered, named.status is Status.PASS) == (valid, valid)
