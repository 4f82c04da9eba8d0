"""Changes as data: what a run would do, computed without side effects.

Every step (DNS records, vhosts, sites, certificates) describes its work as
``Change`` rows of one ``Plan``; the CLI renders the plan as a table or JSON before
anything is applied, and each step reports one ``Outcome`` per agency afterwards.
Kind-specific data lives in the generic fields: for DNS, ``name`` is the record
name, ``rdtype`` its type, ``old``/``new`` the record values as text and ``ttl``
the TTL the record gets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

ACTIONS = ("create", "update", "delete", "conflict", "noop")
MUTATING_ACTIONS = ("create", "update", "delete")
ROW_COLUMNS = ("agency", "kind", "action", "name", "type", "old", "new", "reason")

OUTCOME_STATUSES = ("changed", "ok", "failed")
OUTCOME_COLUMNS = ("agency", "kind", "status", "detail")


@dataclass(frozen=True)
class Change:
    agency: str
    kind: str  # "dns", "vhost", "site", "cert", ...
    action: str  # one of ACTIONS
    name: str
    rdtype: str = ""
    old: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    reason: str = ""
    ttl: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")
        object.__setattr__(self, "old", tuple(self.old))
        object.__setattr__(self, "new", tuple(self.new))

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING_ACTIONS

    def row(self, zone: str | None = None) -> list[str]:
        """The change as table cells; ``zone`` shortens names inside it ("@" for the apex)."""
        return [self.agency, self.kind, self.action, _relative(self.name, zone), self.rdtype,
                _values(self.old), _values(self.new), self.reason]

    def to_dict(self) -> dict[str, Any]:
        return {"agency": self.agency, "kind": self.kind, "action": self.action,
                "name": self.name, "rdtype": self.rdtype, "old": list(self.old),
                "new": list(self.new), "ttl": self.ttl, "reason": self.reason}


def _values(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "-"


def _relative(name: str, zone: str | None) -> str:
    if zone is None:
        return name
    if name == zone:
        return "@"
    return name.removesuffix("." + zone)


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", tuple(self.changes))

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.changes + other.changes)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def counts(self) -> dict[str, int]:
        """How many changes of each action (every action listed, zeros included)."""
        found = Counter(c.action for c in self.changes)
        return {action: found[action] for action in ACTIONS}

    @property
    def has_changes(self) -> bool:
        return any(c.mutating for c in self.changes)

    @property
    def has_conflicts(self) -> bool:
        return any(c.action == "conflict" for c in self.changes)

    def agencies(self) -> list[str]:
        """The agencies the plan mentions, in plan order."""
        return list(dict.fromkeys(c.agency for c in self.changes))

    def for_agency(self, slug: str) -> Plan:
        return Plan(tuple(c for c in self.changes if c.agency == slug))

    def of_kind(self, kind: str) -> Plan:
        return Plan(tuple(c for c in self.changes if c.kind == kind))

    def rows(self, zone: str | None = None) -> list[list[str]]:
        """One row per change, in ROW_COLUMNS order (names relative to ``zone`` if given)."""
        return [c.row(zone) for c in self.changes]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "counts": self.counts(),
                "has_changes": self.has_changes}


@dataclass(frozen=True)
class Outcome:
    """What one step did for one agency: changed, ok (nothing to do) or failed."""

    agency: str
    kind: str
    status: str  # one of OUTCOME_STATUSES
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of "
                             f"{OUTCOME_STATUSES}")

    def row(self) -> list[str]:
        return [self.agency, self.kind, self.status, self.detail]

    def to_dict(self) -> dict[str, str]:
        return {"agency": self.agency, "kind": self.kind, "status": self.status,
                "detail": self.detail}


def any_failed(outcomes: Iterable[Outcome]) -> bool:
    return any(o.status == "failed" for o in outcomes)
