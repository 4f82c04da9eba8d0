"""The ACME rate-limit ledger (provisioner/tls/ratelimit.py), driven with a fake clock."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from provisioner.errors import ProvisionerError
from provisioner.registry.models import LETS_ENCRYPT_LIMITS, RateLimit
from provisioner.tls import ratelimit
from provisioner.tls.ratelimit import CERTIFICATES, FAILURES, ORDERS, Demand, Event

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
ACCOUNT = "https://acme-staging-v02.api.letsencrypt.org/directory"
ZONE = "paserkab.go.id"


class FakeClock:
    def __init__(self, now: dt.datetime = NOW):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def demand(slug: str, *, renewal: bool = False, names: tuple[str, ...] | None = None) -> Demand:
    return Demand(slug, names or (f"{slug}.{ZONE}",), ACCOUNT, renewal)


def certs(count: int, start: dt.datetime, step: dt.timedelta = HOUR) -> list[Event]:
    """``count`` certificates of the zone's registered domain, one per ``step`` from start."""
    return [Event(CERTIFICATES, ZONE, start + i * step) for i in range(count)]


# --------------------------------------------------------------------------- registered domain

@pytest.mark.parametrize("name,registered", [
    ("dinkes.paserkab.go.id", "paserkab.go.id"),  # go.id is a public suffix
    ("paserkab.go.id", "paserkab.go.id"),
    ("*.paserkab.go.id", "paserkab.go.id"),
    ("Kec-Kuaro.Paserkab.GO.ID.", "paserkab.go.id"),
    ("www.example.co.uk", "example.co.uk"),
    ("a.b.example.com", "example.com"),
    ("go.id", "go.id"),  # a public suffix itself stands for itself
])
def test_registered_domain_from_the_public_suffix_list(name: str, registered: str):
    assert ratelimit.registered_domain(name) == registered


# --------------------------------------------------------------------------- budget (table)

CASES = [
    # (id, events, demands, limits, admitted, deferred: name -> (kind, key, fits_at))
    ("empty ledger: all fit", [], [demand("dinkes"), demand("dishub")], LETS_ENCRYPT_LIMITS,
     ["dinkes", "dishub"], {}),
    ("49 of 50 this week: one of two fits, the other when the oldest leaves the week",
     certs(49, NOW - 100 * HOUR), [demand("dinkes"), demand("dishub")], LETS_ENCRYPT_LIMITS,
     ["dinkes"], {"dishub": (CERTIFICATES, ZONE, NOW - 100 * HOUR + 168 * HOUR)}),
    ("50 of 50: the third oldest must leave for three more",
     certs(50, NOW - 100 * HOUR), [demand("a"), demand("b"), demand("c")],
     LETS_ENCRYPT_LIMITS, [], {
         "a": (CERTIFICATES, ZONE, NOW + 68 * HOUR),
         "b": (CERTIFICATES, ZONE, NOW + 68 * HOUR),
         "c": (CERTIFICATES, ZONE, NOW + 68 * HOUR)}),
    ("events older than the window do not count",
     certs(50, NOW - 200 * HOUR), [demand("dinkes")], LETS_ENCRYPT_LIMITS, ["dinkes"], {}),
    ("an event exactly one window old has left it",
     [Event(CERTIFICATES, ZONE, NOW - 168 * HOUR)] * 50, [demand("dinkes")],
     LETS_ENCRYPT_LIMITS, ["dinkes"], {}),
    ("a renewal passes a full week (exempt), still counted in usage",
     certs(50, NOW - 100 * HOUR), [demand("dinkes", renewal=True)], LETS_ENCRYPT_LIMITS,
     ["dinkes"], {}),
    ("other registered domains do not count",
     [Event(CERTIFICATES, "kutaikartanegarakab.go.id", NOW - HOUR)] * 50,
     [demand("dinkes")], LETS_ENCRYPT_LIMITS, ["dinkes"], {}),
    ("orders per account: 299 of 300 in 3 hours",
     [Event(ORDERS, ACCOUNT, NOW - 2 * HOUR)] * 299, [demand("a"), demand("b", renewal=True)],
     LETS_ENCRYPT_LIMITS, ["a"], {"b": (ORDERS, ACCOUNT, NOW + HOUR)}),
    ("orders of another CA directory's account do not count",
     [Event(ORDERS, "https://other/dir", NOW - HOUR)] * 300, [demand("a")],
     LETS_ENCRYPT_LIMITS, ["a"], {}),
    ("5 failed validations in the hour: that name waits, another goes",
     [Event(FAILURES, f"dinkes.{ZONE}", NOW - dt.timedelta(minutes=m)) for m in (50, 40, 30,
                                                                               20, 10)],
     [demand("dinkes"), demand("dishub")], LETS_ENCRYPT_LIMITS,
     ["dishub"], {"dinkes": (FAILURES, f"dinkes.{ZONE}", NOW + dt.timedelta(minutes=10))}),
    ("4 failed validations leave room for one order",
     [Event(FAILURES, f"dinkes.{ZONE}", NOW - dt.timedelta(minutes=5))] * 4,
     [demand("dinkes")], LETS_ENCRYPT_LIMITS, ["dinkes"], {}),
    ("the later of two blocking limits decides",
     certs(50, NOW - 168 * HOUR + dt.timedelta(minutes=10), dt.timedelta(0))
     + [Event(FAILURES, f"dinkes.{ZONE}", NOW - dt.timedelta(minutes=30))] * 5,
     [demand("dinkes")], LETS_ENCRYPT_LIMITS, [],
     {"dinkes": (FAILURES, f"dinkes.{ZONE}", NOW + dt.timedelta(minutes=30))}),
    ("a limit turned off is not checked",
     certs(60, NOW - HOUR, dt.timedelta(0)), [demand("dinkes")],
     [limit for limit in LETS_ENCRYPT_LIMITS if limit.kind != CERTIFICATES], ["dinkes"], {}),
    ("a configured smaller limit: 2 per day",
     certs(1, NOW - 3 * HOUR), [demand("a"), demand("b")],
     [RateLimit(CERTIFICATES, 2, 24)], ["a"], {"b": (CERTIFICATES, ZONE, NOW + 21 * HOUR)}),
    ("a limit of 1 and an empty ledger: the second waits a whole window",
     [], [demand("a"), demand("b")], [RateLimit(CERTIFICATES, 1, 24)],
     ["a"], {"b": (CERTIFICATES, ZONE, NOW + 24 * HOUR)}),
    ("a wildcard and its apex are one registered domain",
     certs(49, NOW - HOUR, dt.timedelta(0)),
     [demand("wildcard", names=(f"*.{ZONE}", ZONE))], LETS_ENCRYPT_LIMITS, ["wildcard"], {}),
]


@pytest.mark.parametrize("events,demands,limits,admitted,deferred",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_budget(events, demands, limits, admitted, deferred):
    found = ratelimit.budget(demands, events, limits, NOW)
    assert list(found.admitted) == admitted
    assert {name: (d.kind, d.key, d.fits_at) for name, d in found.deferred.items()} == deferred
    for name, item in found.deferred.items():
        assert name not in found.admitted
        assert f"fits after {item.fits_at:%Y-%m-%d %H:%M} UTC" in item.reason


def test_a_deferred_demand_fits_at_the_time_it_names():
    """Advance the clock to the named time (and a second before): it fits exactly then."""
    events = certs(50, NOW - 100 * HOUR, dt.timedelta(minutes=7))
    first = ratelimit.budget([demand("x")], events, LETS_ENCRYPT_LIMITS, NOW)
    when = first.deferred["x"].fits_at
    before = ratelimit.budget([demand("x")], events, LETS_ENCRYPT_LIMITS,
                              when - dt.timedelta(seconds=1))
    at = ratelimit.budget([demand("x")], events, LETS_ENCRYPT_LIMITS, when)
    assert "x" in before.deferred and at.admitted == ("x",)


def test_usage_shows_used_planned_and_limit():
    events = certs(12, NOW - 20 * HOUR) + [Event(ORDERS, ACCOUNT, NOW - HOUR)] * 7 \
        + [Event(FAILURES, f"dinkes.{ZONE}", NOW - dt.timedelta(minutes=3))] * 2
    found = ratelimit.budget([demand("dinkes"), demand("dishub")], events,
                             LETS_ENCRYPT_LIMITS, NOW)
    lines = [u.line() for u in found.usage]
    assert lines == [
        f"certificates per registered domain ({ZONE}): 12 used + 2 this run of 50 per 7 days",
        f"failed validations per hostname (dinkes.{ZONE}): 2 used + 0 this run of 5 per 1 h",
        f"new orders per account ({ACCOUNT}): 7 used + 2 this run of 300 per 3 h",
    ]


# --------------------------------------------------------------------------- the file

def test_ledger_records_and_reads_back_with_a_fake_clock(tmp_path: Path):
    clock = FakeClock()
    ledger = ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS, clock)
    ledger.record_order(ACCOUNT)
    ledger.record_certificate((f"dinkes.{ZONE}",))
    clock.advance(HOUR)
    ledger.record_failures([f"Dishub.{ZONE}."])
    again = ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS, clock)
    assert again.events == [Event(ORDERS, ACCOUNT, NOW), Event(CERTIFICATES, ZONE, NOW),
                            Event(FAILURES, f"dishub.{ZONE}", NOW + HOUR)]


def test_ledger_file_is_private_json_replaced_atomically(tmp_path: Path):
    ledger = ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS, FakeClock())
    ledger.record_order(ACCOUNT)
    path = ratelimit.ledger_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["events"][0]["kind"] == ORDERS
    assert [p.name for p in path.parent.iterdir()] == ["ratelimit.json"]  # no temp file left


def test_ledger_drops_events_past_the_longest_window_keeps_other_cas(tmp_path: Path):
    clock = FakeClock()
    other = ratelimit.Ledger(tmp_path, "https://other/dir", LETS_ENCRYPT_LIMITS, clock)
    other.record_order("https://other/dir")
    ledger = ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS, clock)
    ledger.record_certificate((f"dinkes.{ZONE}",))
    clock.advance(169 * HOUR)
    ledger.record_order(ACCOUNT)
    assert ledger.events == [Event(ORDERS, ACCOUNT, NOW + 169 * HOUR)]
    data = json.loads(ratelimit.ledger_path(tmp_path).read_text())
    assert {item["ca"] for item in data["events"]} == {ACCOUNT, "https://other/dir"}


def test_a_ledger_without_limits_still_keeps_a_week(tmp_path: Path):
    clock = FakeClock()
    ledger = ratelimit.Ledger(tmp_path, ACCOUNT, (), clock)
    ledger.record_certificate((f"dinkes.{ZONE}",))
    clock.advance(100 * HOUR)
    ledger.record_order(ACCOUNT)
    assert len(ledger.events) == 2
    assert ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS, clock).budget(
        [demand("x")]).usage[0].used == 1


def test_ledger_budget_uses_its_clock(tmp_path: Path):
    clock = FakeClock()
    ledger = ratelimit.Ledger(tmp_path, ACCOUNT, [RateLimit(CERTIFICATES, 1, 24)], clock)
    ledger.record_certificate((f"dinkes.{ZONE}",))
    assert ledger.budget([demand("dishub")]).admitted == ()
    clock.advance(24 * HOUR)
    assert ledger.budget([demand("dishub")]).admitted == ("dishub",)


@pytest.mark.parametrize("content", [b"{not json", b'{"events": [{"kind": 1}]}', b"[]",
                                     b'{"events": [{"ca": "x", "kind": "k", "key": "k", '
                                     b'"at": "yesterday"}]}'])
def test_an_unreadable_ledger_is_named_not_reset(tmp_path: Path, content: bytes):
    path = ratelimit.ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ProvisionerError, match="not a rate-limit ledger"):
        ratelimit.Ledger(tmp_path, ACCOUNT, LETS_ENCRYPT_LIMITS)
    assert path.read_bytes() == content
