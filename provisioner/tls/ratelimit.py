"""The ACME rate-limit ledger: what this controller asked of its CA, and what still fits.

A CA such as Let's Encrypt refuses orders past its limits (50 certificates per
registered domain per week, 300 new orders per account per 3 hours, 5 failed
validations per hostname per hour; ``models.LETS_ENCRYPT_LIMITS``) and a refused
regency waits days. So every order, issued certificate and failed validation is
written to ``<state_dir>/acme/ratelimit.json`` (0600, replaced atomically), per CA
directory, and ``budget`` decides before a run which certificates fit: the others
are left for a later run, with the time they fit.

The registered domain comes from the public suffix list (tldextract's bundled
snapshot; nothing is fetched at run time): go.id is a public suffix, so every
agency of paserkab.go.id shares that registered domain's weekly limit.

Layers: pure (``Event``, ``Demand``, ``budget``, ``registered_domain``) and the file
(``Ledger``), whose clock is injected so the tests drive it with a fake one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import tldextract

from ..errors import ProvisionerError
from ..registry.models import LETS_ENCRYPT_LIMITS, RateLimit
from ..safety.secrets import write_private_file

CERTIFICATES = "certificates_per_registered_domain"
ORDERS = "new_orders_per_account"
FAILURES = "failed_validations_per_hostname"
TITLES = {CERTIFICATES: "certificates per registered domain",
          ORDERS: "new orders per account",
          FAILURES: "failed validations per hostname"}
LEDGER_VERSION = 1

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@functools.lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    """The bundled public suffix list only: no download, no cache written."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(name: str) -> str:
    """The name's registered domain (one label under its public suffix); a name that is
    itself a public suffix, or has none, stands for itself."""
    name = name.lower().rstrip(".").removeprefix("*.")
    found = _extractor()(name)
    return found.top_domain_under_public_suffix or name


# =========================================================================== pure


@dataclass(frozen=True)
class Event:
    kind: str  # a RATE_LIMIT_KINDS value
    key: str  # registered domain, account (directory URL) or hostname
    at: dt.datetime  # aware, UTC


@dataclass(frozen=True)
class Demand:
    """What one certificate order asks of the limits."""

    name: str  # the target's key (an agency slug or wildcard.<zone>)
    names: tuple[str, ...]
    account: str
    renewal: bool = False  # the same names again

    def needs(self) -> list[tuple[str, str, int]]:
        """(kind, key, events this order adds); failed validations add none, yet a name at
        its limit of failures gets no order."""
        domains = sorted({registered_domain(n) for n in self.names})
        hostnames = sorted({n.lower().rstrip(".") for n in self.names})
        return ([(CERTIFICATES, d, 1) for d in domains] + [(ORDERS, self.account, 1)]
                + [(FAILURES, h, 0) for h in hostnames])


@dataclass(frozen=True)
class Usage:
    """One limit at one key: events in the window, what this run adds, the limit."""

    kind: str
    key: str
    used: int
    planned: int
    limit: int
    hours: float

    def line(self) -> str:
        return (f"{TITLES[self.kind]} ({self.key}): {self.used} used + {self.planned} this run "
                f"of {self.limit} per {_hours(self.hours)}")

    def to_dict(self) -> dict[str, Any]:
        return {"limit_kind": self.kind, "key": self.key, "used": self.used,
                "planned": self.planned, "limit": self.limit, "hours": self.hours}


@dataclass(frozen=True)
class Deferred:
    """A certificate left for a later run: the limit in the way and when it fits."""

    name: str
    kind: str
    key: str
    fits_at: dt.datetime

    @property
    def reason(self) -> str:
        return (f"left for a later run: {TITLES[self.kind]} ({self.key}) is at its limit; "
                f"fits after {self.fits_at:%Y-%m-%d %H:%M} UTC")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit_kind": self.kind, "key": self.key,
                "fits_at": self.fits_at.isoformat(timespec="seconds"), "reason": self.reason}


@dataclass(frozen=True)
class Budget:
    admitted: tuple[str, ...]  # Demand names, in the order given
    deferred: Mapping[str, Deferred]
    usage: tuple[Usage, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"admitted": list(self.admitted),
                "deferred": {name: d.to_dict() for name, d in self.deferred.items()},
                "usage": [u.to_dict() for u in self.usage]}


def _hours(hours: float) -> str:
    if hours % 24 == 0 and hours >= 48:
        return f"{hours / 24:g} days"
    return f"{hours:g} h"


def window_times(events: Iterable[Event], limit: RateLimit, key: str,
                 now: dt.datetime) -> list[dt.datetime]:
    """Times of the events that count against ``limit`` at ``key`` now, oldest first."""
    start = now - dt.timedelta(hours=limit.hours)
    return sorted(e.at for e in events if e.kind == limit.kind and e.key == key
                  and start < e.at <= now)


def fits_at(times: Sequence[dt.datetime], planned: int, need: int, limit: RateLimit,
            now: dt.datetime) -> dt.datetime:
    """When one more order fits: now, or once enough of the counted events left the window
    (events this run plans happen now and leave it last)."""
    room_needed = max(need, 1) if limit.kind == FAILURES else need
    excess = len(times) + planned + room_needed - limit.limit
    if excess <= 0:
        return now
    window = dt.timedelta(hours=limit.hours)
    if excess <= len(times):
        return times[excess - 1] + window
    return now + window


def budget(demands: Sequence[Demand], events: Sequence[Event], limits: Sequence[RateLimit],
           now: dt.datetime) -> Budget:
    """Admit the demands in order while every limit has room; name the others with the
    time they fit. A renewal passes the limits that exempt renewals (still counted)."""
    by_kind = {limit.kind: limit for limit in limits}
    planned: dict[tuple[str, str], int] = {}
    times: dict[tuple[str, str], list[dt.datetime]] = {}
    admitted, deferred = [], {}
    for demand in demands:
        blocked = None
        for kind, key, need in demand.needs():
            limit = by_kind.get(kind)
            if limit is None or (demand.renewal and limit.renewals_exempt):
                continue
            found = times.setdefault((kind, key), window_times(events, limit, key, now))
            when = fits_at(found, planned.get((kind, key), 0), need, limit, now)
            if when > now and (blocked is None or when > blocked.fits_at):
                blocked = Deferred(demand.name, kind, key, when)
        if blocked is not None:
            deferred[demand.name] = blocked
            continue
        admitted.append(demand.name)
        for kind, key, need in demand.needs():
            planned[(kind, key)] = planned.get((kind, key), 0) + need
    return Budget(tuple(admitted), deferred,
                  usage(demands, events, limits, now, planned))


def usage(demands: Sequence[Demand], events: Sequence[Event], limits: Sequence[RateLimit],
          now: dt.datetime, planned: Mapping[tuple[str, str], int]) -> tuple[Usage, ...]:
    """How much of each limit the run would use, for every key the demands touch
    (failed validations only where a name has some)."""
    rows = []
    keys = sorted({(kind, key) for d in demands for kind, key, _need in d.needs()})
    by_kind = {limit.kind: limit for limit in limits}
    for kind, key in keys:
        limit = by_kind.get(kind)
        if limit is None:
            continue
        used = len(window_times(events, limit, key, now))
        if kind == FAILURES and not used:
            continue
        rows.append(Usage(kind, key, used, planned.get((kind, key), 0), limit.limit,
                          limit.hours))
    return tuple(rows)


# =========================================================================== the file


def ledger_path(state_dir: Path) -> Path:
    return state_dir / "acme" / "ratelimit.json"


class Ledger:
    """The events of one CA directory, kept in the state dir.

    Safe for the issuing threads of one run (a lock); runs are serialised by the
    inventory lock. Events older than the longest window (at least Let's Encrypt's, so
    that limits turned on later start from the truth) are dropped on write."""

    def __init__(self, state_dir: Path, ca: str, limits: Sequence[RateLimit],
                 clock: Clock = utc_now):
        self.path = ledger_path(state_dir)
        self.ca = ca
        self.limits = tuple(limits)
        self.clock = clock
        self._lock = threading.Lock()
        self._all = self._load()

    @property
    def events(self) -> list[Event]:
        """This CA's events."""
        return [event for ca, event in self._all if ca == self.ca]

    def budget(self, demands: Sequence[Demand]) -> Budget:
        return budget(demands, self.events, self.limits, self.clock())

    def record(self, kind: str, keys: Iterable[str]) -> None:
        """Append one event per key, now, and write the file."""
        with self._lock:
            now = self.clock()
            self._all.extend((self.ca, Event(kind, key, now)) for key in keys)
            self._save(now)

    def record_order(self, account: str) -> None:
        self.record(ORDERS, [account])

    def record_certificate(self, names: Sequence[str]) -> None:
        self.record(CERTIFICATES, sorted({registered_domain(n) for n in names}))

    def record_failures(self, hostnames: Iterable[str]) -> None:
        self.record(FAILURES, sorted({h.lower().rstrip(".") for h in hostnames}))

    def _load(self) -> list[tuple[str, Event]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise _unreadable(self.path, exc) from None
        try:
            return [(item["ca"], Event(item["kind"], item["key"],
                                       _aware(dt.datetime.fromisoformat(item["at"]))))
                    for item in data["events"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise _unreadable(self.path, exc) from None

    def _save(self, now: dt.datetime) -> None:
        longest = max(limit.hours for limit in (*self.limits, *LETS_ENCRYPT_LIMITS))
        start = now - dt.timedelta(hours=longest)
        self._all = [(ca, e) for ca, e in self._all if e.at > start or ca != self.ca]
        text = json.dumps({"version": LEDGER_VERSION, "events": [
            {"ca": ca, "kind": e.kind, "key": e.key, "at": e.at.isoformat(timespec="seconds")}
            for ca, e in self._all]}, indent=1) + "\n"
        write_private_file(self.path, text.encode())


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _unreadable(path: Path, exc: Exception) -> ProvisionerError:
    return ProvisionerError(f"{path}: not a rate-limit ledger ({exc})",
                            hint="move it aside; the CA's own limits still apply, so wait a "
                                 "week before ordering many certificates")
