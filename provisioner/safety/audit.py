"""The audit log: who changed what, when, with which result.

Every mutating command appends one JSON line per change to ``<state_dir>/audit.jsonl``
(created 0600). Lines are written with one ``os.write`` on an ``O_APPEND`` descriptor,
so runs that write at the same time never interleave, then fsynced. Before a line is
written every text in it goes through a ``Redactor`` (default: the secrets this process
has loaded, plus PEM private keys and TSIG ``secret "..."`` anywhere): a secret passed
by mistake is scrubbed and the entry marked ``redacted`` rather than the record lost,
because the change it describes has already happened.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ProvisionerError
from ..registry.load import ensure_state_dir
from .secrets import LOADED_SECRETS, Redactor

if TYPE_CHECKING:
    from ..plan import Change

FILE_NAME = "audit.jsonl"
RESULTS = ("ok", "changed", "failed")


def current_operator(environ: Mapping[str, str] = os.environ) -> str:
    """Who runs the command: PROVISIONER_OPERATOR, else the sudo caller, else the login."""
    for variable in ("PROVISIONER_OPERATOR", "SUDO_USER", "USER", "LOGNAME"):
        if environ.get(variable, "").strip():
            return environ[variable].strip()
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class AuditEntry:
    """One change: ``kind`` is what was touched (dns, vhost, site, cert, ...), ``action``
    what was done to it (create, update, delete, ...), ``change`` names and old/new
    values (a short text or a small JSON-able dict), ``result`` ok/changed/failed."""

    command: str
    agency: str | None
    kind: str
    action: str
    change: str | dict[str, Any]
    result: str
    reason: str | None = None
    time: datetime = field(default_factory=_now)
    operator: str = field(default_factory=current_operator)
    redacted: bool = False  # a secret was scrubbed from this entry before it was written

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"audit result must be one of {RESULTS}, not {self.result!r}")
        if self.time.tzinfo is None:
            raise ValueError("audit time must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEntry:
        return cls(**{**data, "time": datetime.fromisoformat(data["time"])})

    @classmethod
    def of_change(cls, command: str, change: Change, result: str, reason: str | None = None,
                  **done: str) -> AuditEntry:
        """The entry of a planned change: its name, type, old and new values (and ``done``:
        what the step that carried it out reports)."""
        return cls(command=command, agency=change.agency, kind=change.kind,
                   action=change.action,
                   change={"name": change.name, "type": change.rdtype, "old": list(change.old),
                           "new": list(change.new), **done},
                   result=result, reason=reason)


class AuditLog:
    """The append-only audit file of one state dir."""

    def __init__(self, state_dir: Path, *, redactor: Redactor = LOADED_SECRETS):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME
        self.redactor = redactor

    def _scrubbed(self, entry: AuditEntry) -> AuditEntry:
        data = entry.to_dict()
        clean = self.redactor.scrub_data(data)
        if clean == data:
            return entry
        return replace(AuditEntry.from_dict(clean), redacted=True)

    def record(self, *entries: AuditEntry) -> list[AuditEntry]:
        """Append the entries (scrubbed) in one write and fsync; returns them as written."""
        written = [self._scrubbed(entry) for entry in entries]
        if not written:
            return written
        data = "".join(json.dumps(entry.to_dict(), ensure_ascii=False, default=str) + "\n"
                       for entry in written).encode("utf-8")
        ensure_state_dir(self.state_dir)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            try:
                count = os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ProvisionerError(f"audit log {self.path}: cannot append: {exc.strerror}",
                                   hint="check free space and that the state dir is "
                                        "writable") from None
        if count != len(data):
            raise ProvisionerError(f"audit log {self.path}: short write ({count} of "
                                   f"{len(data)} bytes)", hint="check free space")
        return written

    def read(self, since: datetime | None = None, agency: str | None = None) -> list[AuditEntry]:
        """Entries in the order written, optionally from ``since`` (aware) on and for one agency."""
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ProvisionerError(f"audit log {self.path}: cannot read: {exc}") from None
        entries = [self._parse(number, line) for number, line in enumerate(lines, 1) if line]
        return [e for e in entries
                if (since is None or e.time >= since) and (agency is None or e.agency == agency)]

    def _parse(self, number: int, line: str) -> AuditEntry:
        try:
            return AuditEntry.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            raise ProvisionerError(f"audit log {self.path}:{number}: not an audit record "
                                   f"({exc})", hint="every line must be one JSON record "
                                                    "written by provisioner") from None
