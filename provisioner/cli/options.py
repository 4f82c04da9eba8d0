"""The options several commands take, and their choices."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer


class Format(str, Enum):
    table = "table"
    json = "json"


class Lang(str, Enum):
    id = "id"
    en = "en"


def dry_run_option(help_text: str) -> Any:
    """--dry-run, with what it does instead for one command."""
    return typer.Option(False, "--dry-run", help=help_text)


FORMAT_OPTION = typer.Option(Format.table, "--format", "-f")
YES_OPTION = typer.Option(False, "--yes", "-y", help="Apply without asking.")
DRY_RUN_OPTION = dry_run_option("Show the plan and stop.")
BREAK_LOCK_OPTION = typer.Option(False, "--break-lock",
                                 help="Take over the inventory lock of a run that died "
                                      "without releasing it (its PID must be gone).")
