"""How the ACME client waits (provisioner/tls/acme.py): polling with backoff inside a deadline,
``Retry-After`` on polls and on refusals (429, 503). Pure code: real ``requests`` responses
and acme's real network layer over a scripted transport, a fake clock, no sleeping."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import josepy as jose
import pytest
import requests
from acme import errors as acme_errors
from cryptography.hazmat.primitives.asymmetric import ec

from provisioner.errors import AcmeError, ProvisionerError
from provisioner.registry.models import AcmeSettings
from provisioner.tls.acme import (
    BUSY_RETRIES,
    POLL_FIRST,
    POLL_GROWTH,
    POLL_MAX,
    PatientNetwork,
    existing_account,
    poll,
    retry_after_seconds,
)
from provisioner.tls.certs import CertRecord
from provisioner.tls.decisions import CertDecision, for_this_ca

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
NONCE = "bm9uY2Utb25l"


def response(status: int = 200, headers: dict[str, str] | None = None,
             body: Any = None) -> requests.Response:
    made = requests.Response()
    made.status_code = status
    made.headers.update(headers or {})
    if body is not None:
        made._content = json.dumps(body).encode()
        made.headers.setdefault("Content-Type", "application/json")
    else:
        made._content = b""
    made.url = "https://ca.test/"
    return made


# --------------------------------------------------------------------------- Retry-After

@pytest.mark.parametrize("header,seconds", [
    (None, None),
    ("", None),
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("-5", None),
    ("soon", None),
    ("9" * 40, None),  # absurdly long: unreadable, not a 40-digit sleep
    ("Tue, 01 Dec 2026 09:01:30 GMT", 90.0),
    ("Tue, 01 Dec 2026 16:01:30 +0700", 90.0),  # an offset is hours, not days
    ("Tue, 01 Dec 2026 08:00:00 GMT", 0.0),  # in the past: now
    ("Tue, 41 Dec 2026 08:00:00 GMT", None),
])
def test_retry_after_seconds(header: str | None, seconds: float | None):
    headers = {} if header is None else {"Retry-After": header}
    assert retry_after_seconds(response(headers=headers), lambda: NOW) == seconds


# --------------------------------------------------------------------------- poll

class Scripted:
    """A fake clock and sleep, and fetch answers from a script: (done?, headers)."""

    def __init__(self, script: list[tuple[bool, dict[str, str]]]):
        self.script = list(script)
        self.now = 0.0
        self.waits: list[float] = []
        self.fetches = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def fetch(self) -> tuple[bool, requests.Response]:
        self.fetches += 1
        done, headers = self.script.pop(0)
        return done, response(headers=headers)

    def poll(self, deadline: float = 90.0, **kwargs: Any) -> bool:
        return poll(self.fetch, bool, deadline, clock=self.clock, sleep=self.sleep,
                    **kwargs)


def test_poll_waits_about_a_second_first_then_longer_capped():
    run = Scripted([(False, {})] * 9 + [(True, {})])
    assert run.poll(deadline=1000) is True
    assert run.waits[0] == POLL_FIRST == 1.0
    assert run.waits == sorted(run.waits) and run.waits[1] > run.waits[0]
    assert max(run.waits) == POLL_MAX
    assert run.fetches == 10


def test_poll_honours_a_longer_retry_after_and_keeps_its_backoff():
    run = Scripted([(False, {"Retry-After": "20"}), (False, {}), (True, {})])
    run.poll()
    assert run.waits == [1.0, 20.0, POLL_FIRST * POLL_GROWTH ** 2]


def test_poll_a_shorter_retry_after_does_not_hurry_it():
    run = Scripted([(False, {})] * 3 + [(False, {"Retry-After": "0"}), (True, {})])
    run.poll()
    assert run.waits[4] == pytest.approx(POLL_FIRST * POLL_GROWTH ** 4)


def test_poll_times_out_before_a_wait_past_the_deadline_without_sleeping_it():
    run = Scripted([(False, {"Retry-After": "600"})])
    with pytest.raises(acme_errors.TimeoutError):
        run.poll(deadline=90.0)
    assert run.waits == [1.0] and run.now == 1.0


def test_poll_respects_the_deadline_with_backoff():
    run = Scripted([(False, {})] * 100)
    with pytest.raises(acme_errors.TimeoutError):
        run.poll(deadline=30.0)
    assert run.now <= 30.0 and run.fetches < 10


def test_poll_first_wait_can_be_given():
    run = Scripted([(True, {})])
    run.poll(first_wait=3.0)
    assert run.waits == [3.0]


# --------------------------------------------------------------------------- refusals

DIRECTORY = {"newNonce": "https://ca.test/nonce", "newAccount": "https://ca.test/acct",
             "newOrder": "https://ca.test/order"}
RATE_LIMITED = {"type": "urn:ietf:params:acme:error:rateLimited",
                "detail": "too many new orders recently"}


class Transport:
    """Stands in for requests.Session.request: HEAD gives a nonce, GET and POST answer
    from scripts."""

    def __init__(self, answers: list[requests.Response]):
        self.answers = list(answers)
        self.calls: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append(method)
        if method == "HEAD":
            return response(headers={"Replay-Nonce": NONCE})
        return self.answers.pop(0)


def network(answers: list[requests.Response]) -> tuple[PatientNetwork, Transport, list]:
    net = PatientNetwork(jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())),
                         alg=jose.ES256)
    transport = Transport(answers)
    net.session.request = transport.request  # type: ignore[method-assign]
    slept: list[float] = []
    net.sleep = slept.append  # type: ignore[method-assign]
    return net, transport, slept


def problem(status: int, retry_after: str | None) -> requests.Response:
    headers = {"Content-Type": "application/problem+json", "Replay-Nonce": NONCE}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return response(status, headers, RATE_LIMITED)


def test_a_busy_directory_is_asked_again_after_its_retry_after():
    net, transport, slept = network([problem(503, "2"), response(body=DIRECTORY)])
    assert net.get("https://ca.test/dir").json() == DIRECTORY
    assert slept == [2.0] and transport.calls == ["GET", "GET"]


def test_a_rate_limited_post_waits_and_is_sent_again_with_a_fresh_nonce():
    created = response(201, {"Replay-Nonce": NONCE, "Location": "https://ca.test/o/1"},
                       {"status": "pending"})
    net, transport, slept = network([problem(429, "3"), created])
    assert net.post("https://ca.test/order", None).status_code == 201
    assert slept == [3.0]
    assert transport.calls == ["HEAD", "POST", "HEAD", "POST"]


def test_a_long_retry_after_ends_the_call_with_the_time_the_ca_gave():
    net, transport, slept = network([problem(429, "7200")])
    with pytest.raises(AcmeError, match=r"too many new orders recently.*asks to retry after "
                                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"):
        net.post("https://ca.test/order", None)
    assert slept == [] and transport.calls == ["HEAD", "POST"]


def test_a_refusal_without_retry_after_is_raised_at_once():
    net, _transport, slept = network([problem(429, None)])
    with pytest.raises(Exception) as caught:
        net.post("https://ca.test/order", None)
    assert "too many new orders" in str(caught.value) and slept == []


def test_retries_of_a_busy_ca_are_bounded():
    net, transport, slept = network([problem(503, "1")] * (BUSY_RETRIES + 1))
    with pytest.raises(AcmeError, match="asks to retry after"):
        net.get("https://ca.test/dir")
    assert slept == [1.0] * BUSY_RETRIES
    assert transport.calls == ["GET"] * (BUSY_RETRIES + 1)


# --------------------------------------------------------------------------- CA switch

STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"


def record(directory: str) -> CertRecord:
    return CertRecord(key="dinkes", names=("dinkes.paserkab.go.id",), serial="abc",
                      not_before="2026-11-01T00:00:00+00:00",
                      not_after="2027-01-30T00:00:00+00:00", issuer="(STAGING) Ersatz",
                      hosts=("web1",), agencies=("dinkes",),
                      issued_at="2026-11-01T00:00:00+00:00", directory=directory)


KEEP = CertDecision("keep", "valid until 2027-01-30 (60 days left)")
DUE = CertDecision("renew", "expires in 10 days (renewing within 30)", renewal=True)
ORDER = CertDecision("order", "no certificate installed")


@pytest.mark.parametrize("decision,directory,expected", [
    (KEEP, PRODUCTION, KEEP),  # this CA issued it
    (KEEP, STAGING, CertDecision("renew", f"issued by another CA ({STAGING})")),
    (KEEP, None, KEEP),  # no record (issued before records, or by hand): keep
    (DUE, PRODUCTION, DUE),  # a renewal at the CA that issued it
    (DUE, STAGING, CertDecision("renew", DUE.reason)),  # new to this CA: no exemption
    (DUE, None, CertDecision("renew", DUE.reason)),
    (ORDER, STAGING, ORDER),
])
def test_a_certificate_of_another_ca_is_ordered_again_and_is_no_renewal(decision, directory,
                                                                        expected):
    records = {} if directory is None else {"dinkes": record(directory)}
    assert for_this_ca({"dinkes": decision}, records, PRODUCTION) == {"dinkes": expected}


def test_an_unreadable_account_key_is_named_before_the_ca_is_asked(tmp_path):
    key_file = tmp_path / "account.pem"
    key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    key_file.chmod(0o600)
    acme = AcmeSettings("https://127.0.0.1:9/dir", "mailto:a@b.id", None, True)
    with pytest.raises(ProvisionerError, match="not an ACME account key"):
        existing_account(acme, key_file)
