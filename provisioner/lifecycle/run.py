"""What a run against the hosts holds, and the runs of ordered steps.

``LockedRun`` is the base of every run (onboarding, offboarding, restore, backup): the
DNS client, the connections it opens and, for a run that may change things, the
inventory's lock. ``StepRun`` adds what offboarding and restore share: steps run in
order, each audited and reported as it ends, the first failure stops the run and a
re-run resumes; ``StepsResult`` is what such a run returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..dns.client import DnsClient
from ..errors import ProvisionerError
from ..hosts import ansible
from ..hosts.pool import HostPool
from ..plan import Change, Outcome
from ..registry.models import Inventory
from ..safety.audit import AuditEntry, AuditLog
from ..safety.lock import run_lock

Report = Callable[[str], None]


def quiet(_line: str) -> None:
    return None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class LockedRun:
    """What every run against the hosts holds: the DNS client, the host agents it talks to
    (``pool``: connected and preflighted on first use), what it opens (closed on exit)
    and, when it has a ``command`` (the command line, so it may change things), the
    inventory's lock: refused while another run holds it or an ansible-playbook of a killed
    run still works on this inventory."""

    def __init__(self, inventory: Inventory, report: Report = quiet, *,
                 command: str | None = None, break_lock: bool = False):
        self.inventory = inventory
        self.report = report
        self.command = command
        self.break_lock = break_lock
        self.dns = DnsClient(inventory.settings)
        self.pool = HostPool(inventory.hosts, inventory.settings.known_hosts_file)
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        if self.command is not None:
            self._stack.enter_context(run_lock(
                self.inventory.state_dir, self.command, break_lock=self.break_lock,
                report=self.report, leftovers=lambda: ansible.running_playbooks(self.inventory)))
        self._stack.enter_context(self.pool)  # closed before the lock is released
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


@dataclass(frozen=True)
class StepsResult:
    """Outcomes of an offboarding or restore, one per step that ran, in order. (Not
    ``hosts.ansible_events.RunResult``: that is one ansible-playbook run, read from its events.)"""

    outcomes: tuple[Outcome, ...]
    archive: Path | None
    steps: tuple[str, ...]

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)

    @property
    def not_run(self) -> tuple[str, ...]:
        """Steps left for a re-run (a failed step stops the run)."""
        done = {o.kind for o in self.outcomes}
        return tuple(s for s in self.steps if s not in done)

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "archive": str(self.archive) if self.archive else None,
                "outcomes": [o.to_dict() for o in self.outcomes],
                "not_run": list(self.not_run)}


class StepRun(LockedRun):
    """A run of ordered steps (offboarding, restore): each audited and reported as it ends,
    the first failure stops the run."""

    def run_step(self, slug: str, kind: str, changes: Sequence[Change],
                 step: Callable[[], Outcome], outcomes: list[Outcome]) -> bool:
        """Run one step (a ProvisionerError is its failure), append its outcome, audit its
        planned ``changes`` with it and report it; False when it failed."""
        try:
            outcome = step()
        except ProvisionerError as exc:
            outcome = Outcome(slug, kind, "failed", str(exc))
        outcomes.append(outcome)
        self.audit(self.step_entries(changes, outcome))
        self.report(f"{kind}: {outcome.status}: {outcome.detail}")
        return outcome.status != "failed"

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        if self.command is not None and entries:
            AuditLog(self.inventory.state_dir).record(*entries)

    def step_entries(self, changes: Sequence[Change], outcome: Outcome) -> list[AuditEntry]:
        """One entry per planned change of the step, with the step's result; a step that
        did something unplanned (or failed with nothing planned) gets one entry of its own."""
        planned = [c for c in changes if c.mutating]
        failed = outcome.status == "failed"
        done = {"done": outcome.detail} if outcome.status == "changed" else {}
        entries = [AuditEntry.of_change(self.command, c, outcome.status,
                                        outcome.detail if failed else None, **done)
                   for c in planned]
        if not entries and outcome.status != "ok":
            entries.append(AuditEntry(command=self.command, agency=outcome.agency,
                                      kind=outcome.kind, action="apply", change=outcome.detail,
                                      result=outcome.status,
                                      reason=outcome.detail if failed else None))
        return entries
