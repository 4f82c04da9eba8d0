"""The options several commands take, and their choices."""

from __future__ import annotations

from enum import Enum

import typer


class Format(str, Enum):
    table = "table"
    json = "json"


class Lang(str, Enum):
    id = "id"
    en = "en"


FORMAT_OPTION = typer.Option(Format.table, "--format", "-f")
YES_OPTION = typer.Option(False, "--yes", "-y", help="Apply without asking.")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Show the plan and stop.")
BREAK_LOCK_OPTION = typer.Option(False, "--break-lock",
                                 help="Take over the inventory lock of a run that died "
                                      "without releasing it (its PID must be gone).")
