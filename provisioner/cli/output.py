"""What the CLI prints and how: the two consoles, JSON, tables, and the escaping that
keeps text from sites, certificates and files from acting on the terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
