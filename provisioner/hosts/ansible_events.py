"""ansible-runner's events as data (pure: tested with recorded events).

``parse_events`` turns one run's events into a ``RunResult``: status, rc, per-host
stats, failed tasks with their messages and every module result; ``progress_of`` turns
one event into the ``Progress`` step the CLI shows. The run itself is ansible.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

ProgressCallback = Callable[["Progress"], None]


@dataclass(frozen=True)
class Progress:
    """One step of one host, as the CLI shows it (a line or bar per host)."""

    host: str
    task: str
    state: str  # started, ok, changed, failed, unreachable, skipped


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    action: str
    failed: bool
    result: Mapping[str, Any]


@dataclass(frozen=True)
class RunResult:
    status: str  # successful, failed, timeout, canceled
    rc: int
    stats: Mapping[str, HostStats]
    failures: tuple[TaskFailure, ...]
    results: tuple[TaskResult, ...]
    output_tail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def result_of(self, host: str, action: str) -> TaskResult | None:
        """The last result of a module on a host (short or fully qualified name)."""
        found = [r for r in self.results
                 if r.host == host and r.action.rsplit(".", 1)[-1] == action]
        return found[-1] if found else None

    def failure_of(self, host: str) -> TaskFailure | None:
        found = [f for f in self.failures if f.host == host]
        return found[0] if found else None


_STATE_OF_EVENT = {
    "runner_on_start": "started",
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


def progress_of(event: Mapping[str, Any]) -> Progress | None:
    """The progress step an ansible-runner event stands for (None: not a host step)."""
    state = _STATE_OF_EVENT.get(event.get("event", ""))
    data = event.get("event_data") or {}
    if state is None or not data.get("host"):
        return None
    if state == "ok" and (data.get("res") or {}).get("changed"):
        state = "changed"
    if state == "failed" and data.get("ignore_errors"):
        state = "ok"
    return Progress(host=data["host"], task=data.get("task", ""), state=state)


def failure_message(result: Mapping[str, Any]) -> str:
    """The most telling text of a failed or unreachable task's result.

    A crashed module says only "MODULE FAILURE": its stderr's last line says why.
    """
    texts = {key: " ".join(str(result.get(key) or "").replace("\r", "").split("\n")).strip()
             for key in ("msg", "module_stderr", "stderr", "module_stdout", "stdout")}
    stderr_lines = str(result.get("module_stderr") or "").strip().splitlines()
    if texts["msg"].startswith("MODULE FAILURE") and stderr_lines:
        return f"module crashed: {stderr_lines[-1].strip()}"
    return next((text for text in texts.values() if text), "failed without a message")


def parse_events(events: Iterable[Mapping[str, Any]], status: str, rc: int,
                 output_tail: str = "", seconds: float = 0.0) -> RunResult:
    """Turn ansible-runner events into a ``RunResult`` (pure: tested with recorded events)."""
    stats: dict[str, HostStats] = {}
    failures: list[TaskFailure] = []
    results: list[TaskResult] = []
    for event in events:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            stats = _stats(data)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            host, task, res = data.get("host", ""), data.get("task", ""), data.get("res") or {}
            failed = kind != "runner_on_ok" and not data.get("ignore_errors")
            if failed:
                failures.append(TaskFailure(host, task, failure_message(res),
                                            unreachable=kind == "runner_on_unreachable"))
            results.append(TaskResult(host, task, data.get("task_action", ""), failed, res))
    return RunResult(status=status, rc=rc, stats=stats, failures=tuple(failures),
                     results=tuple(results), output_tail=output_tail, seconds=seconds)


def _stats(data: Mapping[str, Any]) -> dict[str, HostStats]:
    counters = {"ok": "ok", "changed": "changed", "failures": "failures",
                "unreachable": "dark", "skipped": "skipped"}
    hosts = set()
    for key in counters.values():
        hosts.update((data.get(key) or {}).keys())
    return {host: HostStats(**{name: int((data.get(key) or {}).get(host, 0))
                               for name, key in counters.items()})
            for host in sorted(hosts)}
