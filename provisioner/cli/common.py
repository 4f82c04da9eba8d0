"""What every command shares: --format and --lang, the run's Context (inventory and state
folders), and ``handles_errors``, which maps the package's exceptions to a message and an
exit code. What is printed and how is in output.py.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import typer

from ..errors import InputError, ProvisionerError
from ..registry import load as registry
from ..registry.models import Inventory
from .output import err_console, visible


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


def command_line() -> str:
    """How this run was started, for the lock file and the audit log."""
    return " ".join(["provisioner", *sys.argv[1:]])


BREAK_LOCK_OPTION = typer.Option(False, "--break-lock",
                                 help="Take over the inventory lock of a run that died "
                                      "without releasing it (its PID must be gone).")


class Lang(str, Enum):
    id = "id"
    en = "en"
