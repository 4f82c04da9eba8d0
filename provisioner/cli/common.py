"""What every command shares: the run's Context (inventory and state folders),
``handles_errors``, which maps the package's exceptions to a message and an exit code,
and ``PlannedChange``, the plan -> confirm -> apply -> emit sequence of the commands that
change things from a plan. Shared options are in options.py, what is printed and how in
output.py.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import typer

from ..errors import InputError, ProvisionerError, UsageError
from ..registry import load as registry
from ..registry.models import Inventory
from .options import Format
from .output import console, emit_json, err_console, visible

if TYPE_CHECKING:
    from ..hosts.ansible_events import Progress


@dataclass
class Context:
    inventory_dir: Path
    state_dir: Path | None

    def inventory(self, placement_only: bool = False) -> Inventory:
        return registry.load_inventory(self.inventory_dir, self.state_dir,
                                       placement_only=placement_only)

    @property
    def resolved_state_dir(self) -> Path:
        return (self.state_dir or registry.default_state_dir(self.inventory_dir)).resolve()


def handles_errors(func: Callable) -> Callable:
    """Map the package's exceptions to one clear message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            for problem in exc.problems:
                err_console.print(f"error: {visible(problem)}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except ProvisionerError as exc:
            err_console.print(f"error: {visible(exc)}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: re-run the same command to converge")
            raise typer.Exit(130) from None

    return wrapper


def command_line() -> str:
    """How this run was started, for the lock file and the audit log."""
    return " ".join(["provisioner", *sys.argv[1:]])


def show_records(records: list[Any], fmt: Format, *, none_yet: str,
                 show: Callable[[list[Any]], None]) -> None:
    """A listing: JSON (each record's ``to_dict()``), ``none_yet`` when it is empty, or
    ``show`` (a table)."""
    if fmt is Format.json:
        emit_json([record.to_dict() for record in records])
    elif not records:
        console.print(none_yet)
    else:
        show(records)


def progress_printer(fmt: Format) -> Callable[[str], None]:
    """Where a run's progress lines go: stderr with table output; nowhere with JSON, whose
    stdout is the document."""
    if fmt is Format.table:
        return lambda line: err_console.print(line, markup=False)
    return lambda _line: None


def host_progress(event: Progress) -> None:
    """An Ansible task that changed or failed something on a host, as it happens."""
    if event.state in ("changed", "failed", "unreachable"):
        err_console.print(f"  {event.host}: {event.task}: {event.state}", markup=False)


class PlannedChange:
    """The sequence of every command that changes things from a plan (onboard, renew,
    offboard, restore): show the plan, stop at --dry-run, ask before applying (unless
    --yes), apply, show the result, exit 1 when anything failed.

    With --format json nothing is shown along the way and stdout is one document:
    {"plan": ..., "result": ...}, the result null when nothing was applied (onboard's
    applied run: the result alone). JSON cannot ask, so it needs --yes or --dry-run.
    """

    def __init__(self, fmt: Format, *, dry_run: bool, yes: bool) -> None:
        if fmt is Format.json and not (yes or dry_run):
            raise UsageError("--format json cannot ask for confirmation",
                             hint="add --yes or --dry-run")
        self.table_output = fmt is Format.table
        self.dry_run = dry_run
        self.yes = yes
        self.report = progress_printer(fmt)
        self.progress = host_progress if self.table_output else None
        self.plan: Any = None

    def go_ahead(self, plan: Any, show: Callable[[Any], None], *, question: str | None,
                 nothing_to_do: str | None = None) -> bool:
        """Show ``plan``; whether to apply it. Not on a dry run, nor when there is
        ``nothing_to_do`` (said so); ``question`` is asked unless --yes, and a no stops
        the run with exit 1."""
        self.plan = plan
        if self.table_output:
            show(plan)
        if self.dry_run or nothing_to_do:
            if not self.table_output:
                emit_json({"plan": plan.to_dict(), "result": None})
            elif nothing_to_do:
                console.print(nothing_to_do, markup=False)
            return False
        if question and not self.yes and not typer.confirm(question, default=False):
            err_console.print("aborted: nothing was changed")
            raise typer.Exit(1)
        return True

    def finish(self, result: Any, show: Callable[[Any], None], *,
               plan_in_json: bool = True) -> None:
        """Show the result (JSON: with its plan unless not ``plan_in_json``); exit 1 when
        anything failed."""
        if self.table_output:
            show(result)
        elif plan_in_json:
            emit_json({"plan": self.plan.to_dict(), "result": result.to_dict()})
        else:
            emit_json(result.to_dict())
        if result.failed:
            raise typer.Exit(1)
