"""Verify every agency site at once and sum up: the regency's "% active" figure.

A pool of ``concurrency`` tasks verifies the sites (asyncio); each destination
address gets at most ``per_address`` connections at a time, because many agencies share
one web server. ``workers`` processes can share the work on a machine with more cores.
Each site is verified in isolation (verify.guard): nothing one site does aborts the
sweep, every site has a verdict within its deadline, and a site with a check in
``error`` (could not probe) is verified once more inside that deadline. The result is a
list of versioned records (the JSON Lines format is the source of truth; every report is
rendered from these records) and a summary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..registry.models import Inventory, Settings
from .content import ScoringRules, load_rules
from .guard import verify_guarded
from .report import json_text
from .verifier import (
    ACTIVE_CHECKS,
    AgencyResult,
    Status,
    Target,
    VerifyContext,
    agency_target,
    make_context,
    run,
    utc_now,
)

RECORD_SCHEMA = "provisioner/sweep-record/v1"
EXPIRY_WARN_DAYS = 21
SWEEP_GC_YOUNG = 10_000  # allocations between young collections while sweeping

Progress = Callable[[int, int, str], None]  # (done, total, agency just finished)


@dataclass(frozen=True)
class Summary:
    total: int
    active: int
    active_pct: float
    expiring: tuple[tuple[str, int], ...]  # (agency, days left) within EXPIRY_WARN_DAYS
    mean_score: float
    inactive: tuple[str, ...]

    def line(self) -> str:
        """The one-line summary ops read first."""
        return (f"active {self.active}/{self.total} ({self.active_pct:g} %), "
                f"{len(self.expiring)} certificate(s) expiring within {EXPIRY_WARN_DAYS} days, "
                f"mean publication score {self.mean_score:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "active": self.active, "active_pct": self.active_pct,
                "expiring": [{"agency": a, "days_left": d} for a, d in self.expiring],
                "mean_publication_score": self.mean_score, "inactive": list(self.inactive)}


@dataclass(frozen=True)
class SweepResult:
    started_at: dt.datetime
    finished_at: dt.datetime
    scoring_version: int
    records: Sequence[dict[str, Any]]  # one per agency, in inventory order
    summary: Summary

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


# =========================================================================== records

class Records(Sequence[dict[str, Any]]):
    """A sweep's records, each kept as its JSON text compressed and read back when used: a
    10,000-site sweep holds ~12 MB of them instead of ~70 MB of dicts (and no small
    long-lived objects scattered among the sweep's short-lived ones, which kept freed
    memory from being reused)."""

    def __init__(self, packed: list[bytes]):
        self._packed = packed  # pack(record) of each

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> Records:
        return cls([pack(r) for r in records])

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [json.loads(text) for text in self._texts(self._packed[index])]
        return json.loads(zlib.decompress(self._packed[index]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (json.loads(text) for text in self.texts())

    def texts(self) -> Iterator[str]:
        """Each record as report.json_text writes it (nothing decoded)."""
        return self._texts(self._packed)

    @staticmethod
    def _texts(packed: list[bytes]) -> Iterator[str]:
        return (zlib.decompress(p).decode("utf-8") for p in packed)


def pack(record: dict[str, Any]) -> bytes:
    return zlib.compress(json_text(record).encode("utf-8"), 1)


def record_texts(records: Sequence[dict[str, Any]]) -> Iterator[str]:
    """The records' JSON texts (report.json_text), from packed records without decoding."""
    return records.texts() if isinstance(records, Records) else map(json_text, records)


def record_of(result: AgencyResult, name: str | None, started_at: dt.datetime,
              rules: ScoringRules, attempts: int) -> dict[str, Any]:
    """The versioned JSON Lines record of one agency: the verify document, plus context."""
    document = result.to_dict()
    document["publication"]["band"] = result.publication.band
    return {"schema": RECORD_SCHEMA, "sweep": _iso(started_at),
            "scoring_version": rules.version, "name": name, **document,
            "reasons": reasons(result),
            "attempts": attempts}


def reasons(result: AgencyResult) -> list[str]:
    """Why a site is not active: its failed or unprobed decisive checks; an inactive site
    without one (no HTTPS was checked at all) says so (pure)."""
    found = [f"{c.id}: {c.detail}" for c in result.problems() if c.id in ACTIVE_CHECKS]
    if found or result.active:
        return found
    if result.url.startswith("http://"):
        return [f"no HTTPS: served only over http:// ({result.url})"]
    return [f"{c.id}: {c.status.value}: {c.detail}" for c in result.checks
            if c.id in ACTIVE_CHECKS and c.status not in (Status.PASS, Status.WARN)] \
        or ["not active: https.status did not pass"]


def summarise(records: Sequence[dict[str, Any]]) -> Summary:
    """The sweep's figures, from the records alone, read once (pure)."""
    total = len(records)
    expiring, inactive, scores = [], [], []
    for r in records:
        name = r["agency"] or r["url"]
        days_left = r["cert"]["days_left"]
        if days_left is not None and days_left < EXPIRY_WARN_DAYS:
            expiring.append((name, days_left))
        if not r["active"]:
            inactive.append(name)
        scores.append(r["publication"]["score"])
    active = total - len(inactive)
    return Summary(
        total=total, active=active,
        active_pct=round(100 * active / total, 1) if total else 0.0,
        expiring=tuple(sorted(expiring, key=lambda x: x[1])),
        mean_score=round(fmean(scores), 1) if total else 0.0,
        inactive=tuple(inactive),
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


# =========================================================================== running

async def verify_all(targets: list[Target], ctx: VerifyContext, concurrency: int,
                     progress: Progress | None = None,
                     keep: Callable[[AgencyResult, int], Any] = lambda *outcome: outcome
                     ) -> list[Any]:
    """Verify every target with a pool of workers, each site guarded (a result and its
    attempts for every one, whatever it does); results in the targets' order, each as
    ``keep(result, attempts)`` gives it as soon as the site is done (run_sweep keeps
    its record only)."""
    results: list[Any] = [None] * len(targets)
    pending = iter(enumerate(targets))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index, target in pending:
            results[index] = keep(*await verify_guarded(target, ctx))
            done += 1
            if progress:
                progress(done, len(targets), target.agency or target.url)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(targets))))))
    return results  # type: ignore[return-value]


def sweep_targets(inventory: Inventory) -> list[Target]:
    """Every agency that is not offboarded, hosted here or external."""
    return [agency_target(inventory, a) for a in inventory.select([], all_=True)]


@dataclass(frozen=True)
class Limits:
    """How one process verifies: sites at once, connections per address, seconds per step,
    seconds per site (0: two steps)."""

    concurrency: int
    per_address: int
    timeout: float
    extra_roots: tuple[Path, ...]
    deadline: float = 0.0

    def share(self, workers: int) -> Limits:
        """One worker process's part, so that all of them together keep to these limits."""
        return Limits(max(1, -(-self.concurrency // workers)),
                      max(1, self.per_address // workers), self.timeout, self.extra_roots,
                      self.deadline)


def run_sweep(inventory: Inventory, *, concurrency: int = 32, per_address: int = 8,
              timeout: float = 5.0, extra_roots: tuple[Path, ...] = (), workers: int = 1,
              progress: Progress | None = None, deadline: float = 0.0) -> SweepResult:
    """Sweep the inventory's agencies; the caller renders and stores the result.

    ``workers`` > 1 splits the agencies among that many processes (one event loop each),
    for machines whose sweep is bound by one CPU core."""
    targets = sweep_targets(inventory)
    rules = load_rules()
    started = utc_now()
    limits = Limits(concurrency, per_address, timeout, extra_roots, deadline)
    names = {a.slug: a.name for a in inventory.agencies.values()}

    def record(result: AgencyResult, attempts: int) -> dict[str, Any]:
        return record_of(result, names.get(result.agency), started, rules, attempts)

    with _collector_skips_what_exists():
        if workers > 1 and len(targets) > 1:
            outcomes = _verify_in_processes(inventory.settings, targets, limits, workers,
                                            progress)
            records = Records.of(record(result, attempts) for result, attempts in outcomes)
            del outcomes
        else:  # a site's result is made its packed record at once
            records = Records(verify_shard(inventory.settings, targets, limits, progress,
                                           lambda *outcome: pack(record(*outcome))))
    return SweepResult(started_at=started, finished_at=utc_now(), scoring_version=rules.version,
                       records=records, summary=summarise(records))


@contextmanager
def _collector_skips_what_exists() -> Iterator[None]:
    """The inventory and the modules live as long as the sweep: move them out of the cyclic
    garbage collector's sight, so that its full collections during the sweep do not walk
    them again and again (about 5 % of a 1,000-site sweep's CPU). A site's objects die
    young and almost all by reference counting: the young generation is collected every
    SWEEP_GC_YOUNG allocations instead of 700 (the collector's CPU in a 1,000-site sweep:
    ~0.06 s instead of ~0.3 s, a twentieth of the sweep)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(SWEEP_GC_YOUNG, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def verify_shard(settings: Settings, targets: list[Target], limits: Limits,
                 progress: Progress | None = None,
                 keep: Callable[[AgencyResult, int], Any] = lambda *outcome: outcome
                 ) -> list[Any]:
    """Verify some targets in this process, on its own event loop (each outcome as
    ``keep`` makes it, see verify_all)."""

    async def verify_targets() -> list[Any]:
        ctx = make_context(settings, limits.extra_roots, per_address=limits.per_address,
                           timeout=limits.timeout, deadline=limits.deadline)
        try:
            return await verify_all(targets, ctx, limits.concurrency, progress, keep)
        finally:
            await ctx.close()

    return run(verify_targets())


_progress_queue: multiprocessing.SimpleQueue | None = None  # set in each worker process


def _remember_queue(queue: multiprocessing.SimpleQueue) -> None:
    global _progress_queue
    _progress_queue = queue


def _shard_in_worker(settings: Settings, targets: list[Target],
                     limits: Limits) -> list[tuple[AgencyResult, int]]:
    def report(done: int, total: int, agency: str) -> None:
        _progress_queue.put(agency)

    return verify_shard(settings, targets, limits, report)


def _verify_in_processes(settings: Settings, targets: list[Target], limits: Limits,
                         workers: int, progress: Progress | None) -> list[tuple[AgencyResult, int]]:
    """Round-robin shards in worker processes; results back in the targets' order."""
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()
    shards = [targets[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_remember_queue,
                             initargs=(queue,)) as pool:
        futures = [pool.submit(_shard_in_worker, settings, shard, limits.share(workers))
                   for shard in shards if shard]
        done = 0
        while futures_wait(futures, timeout=0.1).not_done or not queue.empty():
            while not queue.empty():
                done += 1
                agency = queue.get()
                if progress:
                    progress(done, len(targets), agency)
        shard_results = [future.result() for future in futures]
    outcomes: list[tuple[AgencyResult, int]] = [None] * len(targets)  # type: ignore[list-item]
    for i, results in enumerate(shard_results):
        outcomes[i::workers] = results
    return outcomes
