"""What every command shares: the consoles, escaping of untrusted text, tables,
--format, the run's Context (inventory and state folders), and ``handles_errors``,
which maps the package's exceptions to a message and an exit code.

Every run pays for what this package imports, and the heavy modules (Ansible runner,
SSH, ACME, HTTP clients, the verifier) are each needed by a few commands only: they
are imported inside the commands that use them. Only what typer evaluates (parameter
annotations and defaults) and the registry every command loads stay at the top.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import InputError, ProvisionerError
from ..registry import load as registry
from ..registry.models import Inventory

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(str, Enum):
    table = "table"
    json = "json"


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


def emit_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def visible(value: Any) -> str:
    """Text for a terminal: every character that is not printable (C0 and C1 controls,
    ESC, DEL, bidirectional overrides, line breaks) shown as its escape, so that nothing a
    site, certificate or file holds can move the cursor, recolour or retitle the terminal."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def cell(value: Any, style: str = "") -> Text:
    """A table cell or title: escaped (``visible``) and never read as Rich markup."""
    return Text(visible(value), style=style)


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    t = Table(title=cell(title) if title else None)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    console.print(t)


def command_line() -> str:
    """How this run was started, for the lock file and the audit log."""
    return " ".join(["provisioner", *sys.argv[1:]])


BREAK_LOCK_OPTION = typer.Option(False, "--break-lock",
                                 help="Take over the inventory lock of a run that died "
                                      "without releasing it (its PID must be gone).")


class Lang(str, Enum):
    id = "id"
    en = "en"
