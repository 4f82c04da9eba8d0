"""The inventory lock: one mutating run per inventory at a time.

``<state_dir>/provisioner.lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` for the whole
run, and records who holds it (operator, PID, host, command, start time) so a second
operator is told whom to wait for. The kernel drops a flock when its process dies, so a
run killed while holding the lock never blocks the next one; because a clean release
empties the file, a file that still names a holder when the lock is free tells the next
run that the previous one ended without releasing cleanly, which it reports.

Breaking a lock that is still held (a hung run, or a state dir on NFS where flock is not
reliable) replaces the lock file; it is allowed when the holder's PID is not alive on
this host, otherwise only with explicit confirmation. Take the lock once per command,
around everything it changes; read-only commands (plan, verify, sweep) never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ..errors import LockedError, ProvisionerError
from ..hosts import hostlib
from ..registry.load import ensure_state_dir
from .audit import current_operator

FILE_NAME = "provisioner.lock"
_ATTEMPTS = 3  # another run may replace the file between our open and our flock


@dataclass(frozen=True)
class LockHolder:
    """What a lock file records about the run that holds (or held) it."""

    operator: str
    pid: int
    hostname: str
    command: str
    started_at: str  # ISO 8601, UTC

    def describe(self) -> str:
        return (f"{self.operator} (pid {self.pid} on {self.hostname}, '{self.command}') "
                f"since {self.started_at}")

    def alive_here(self) -> bool | None:
        """Whether the holder still runs; None when it ran on another host (cannot tell)."""
        if self.hostname != socket.gethostname():
            return None
        return hostlib.process_alive(self.pid)


@dataclass(frozen=True)
class LockInfo:
    """The lock this run holds, and what it found: a previous run that did not release
    cleanly (``stale``) or a held lock it broke (``broken``)."""

    path: Path
    holder: LockHolder
    stale: LockHolder | None = None
    broken: LockHolder | None = None

    @property
    def warning(self) -> str | None:
        if self.broken:
            return f"broke the inventory lock of {self.broken.describe()}"
        if self.stale:
            return (f"previous run by {self.stale.describe()} ended without releasing the "
                    "inventory lock cleanly; taking over (see 'provisioner history --audit' "
                    "for what it changed)")
        return None


def _holder_from(raw: bytes) -> LockHolder | None:
    """The holder a lock file records; None when it is empty (released cleanly) or unreadable."""
    try:
        data = json.loads(raw)
        return LockHolder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _read_holder(fd: int) -> LockHolder | None:
    return _holder_from(os.pread(fd, 65536, 0))


def _describe(holder: LockHolder | None) -> str:
    return holder.describe() if holder else "another run (it has not recorded who it is yet)"


def _refuse_unless_breakable(path: Path, holder: LockHolder | None, break_lock: bool,
                             confirmed: bool) -> None:
    """Raise LockedError unless this held lock may be broken."""
    message = f"inventory locked by {_describe(holder)}"
    if not break_lock:
        raise LockedError(f"{message}; wait for it to finish",
                          hint="if that run is hung, or the state dir is on NFS and the run "
                               "has ended, use --break-lock")
    alive = holder.alive_here() if holder else None
    if alive is False or confirmed:
        return
    why = (f"pid {holder.pid} is still running on this host" if alive and holder
           else "whether it still runs cannot be checked from this host")
    raise LockedError(f"{message}; {why}: breaking {path} needs confirmation",
                      hint="make sure that run changes nothing any more, then confirm")


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ProvisionerError(f"inventory lock {path}: cannot open: {exc.strerror}",
                               hint="check that the state dir is writable by you") from None


def _try_flock(path: Path, fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        os.close(fd)
        raise ProvisionerError(f"inventory lock {path}: cannot lock: {exc.strerror}",
                               hint="the state dir's file system must support flock") from None


def _is_current_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file we locked (a broken lock is replaced)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _acquire(path: Path, break_lock: bool,
             confirmed: bool) -> tuple[int, LockHolder | None, LockHolder | None]:
    """(locked fd, holder left by an unclean exit, holder whose lock was broken).

    At most one lock is broken: a run that took the fresh lock in between is respected.
    """
    broken = None
    for _ in range(_ATTEMPTS):
        fd = _open(path)
        if not _try_flock(path, fd):
            holder = _read_holder(fd)
            os.close(fd)
            _refuse_unless_breakable(path, holder, break_lock and broken is None, confirmed)
            path.unlink(missing_ok=True)
            broken = holder
            continue
        if _is_current_file(fd, path):
            return fd, _read_holder(fd), broken
        os.close(fd)
    raise LockedError(f"inventory lock {path} kept changing while this run tried to take it",
                      hint="another run is starting or breaking the lock; retry in a moment")


def _write_holder(fd: int, holder: LockHolder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
    os.fsync(fd)


@contextmanager
def inventory_lock(state_dir: Path, command: str, *, break_lock: bool = False,
                   confirmed: bool = False,
                   leftovers: Callable[[], list[int]] = lambda: []) -> Iterator[LockInfo]:
    """Hold the inventory's lock for the ``with`` block; raise LockedError if another run has it.

    ``command`` is what the holder runs, shown to whoever waits (``"provisioner onboard
    --all"``). ``break_lock`` breaks a held lock whose holder is not alive on this host;
    ``confirmed`` (the operator said yes) lets it break any held lock. ``leftovers()``
    names the PIDs of processes a killed run left working (its ansible-playbook outlives the
    lock the kernel dropped): while there are any, the lock is refused and its file kept as
    found, still naming the run that left them.
    """
    path = ensure_state_dir(Path(state_dir)) / FILE_NAME
    fd, stale, broken = _acquire(path, break_lock, confirmed)
    try:
        still_running = leftovers()
    except BaseException:
        os.close(fd)
        raise
    if still_running:
        os.close(fd)
        pids = ", ".join(map(str, still_running))
        raise LockedError(f"an earlier run's ansible-playbook is still running (pid {pids}) "
                          "on this inventory; wait for it to finish",
                          hint=f"or stop it: kill {pids}; then run this command again")
    try:
        me = LockHolder(current_operator(), os.getpid(), socket.gethostname(), command,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_holder(fd, me)
        yield LockInfo(path=path, holder=me, stale=stale, broken=broken)
    finally:
        _release(fd)


def _release(fd: int) -> None:
    """Empty the file (a clean release), then unlock and close."""
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass  # the next run will report this one as not released cleanly: harmless
    os.close(fd)  # closing the only descriptor drops the flock


@contextmanager
def run_lock(state_dir: Path, command: str, *, break_lock: bool = False,
             report: Callable[[str], None] = lambda _line: None,
             leftovers: Callable[[], list[int]] = lambda: []) -> Iterator[LockInfo]:
    """The lock of one mutating run: state dir created, a stale holder reported."""
    ensure_state_dir(state_dir)
    with inventory_lock(state_dir, command, break_lock=break_lock,
                        leftovers=leftovers) as info:
        if info.warning:
            report(f"lock: {info.warning}")
        yield info
