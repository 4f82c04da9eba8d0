"""Create or update agency files from a spreadsheet (CSV here, .xlsx in ``xlsx.py``).

A CSV has one row per service: rows that share a slug become one agency with several
services; agency fields are taken from the agency's first row. Cells that hold a list
(requirements, procedure steps, opening hours) separate items with line breaks or " | ".

Both formats end in ``plan_import``: every agency is merged into its existing file
(values equal after normalising keep their old form, keys the spreadsheet does not
know are kept), validated with the same rules as ``registry check``, and turned into
a unified diff; nothing is written when a row is unusable.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, Problem
from ..hosts import hostlib
from .agencies import validate_agency_data
from .fields import LABEL_RE
from .models import DELIVERY_COMPONENTS, MANAGEMENT_COMPONENTS, Inventory

AGENCY_COLUMNS = ("slug", "name", "short_name", "host", "external", "subdomain", "description",
                  "address", "phone", "email", "opening_hours", "head_name", "head_title",
                  "maklumat", "sample")
SERVICE_COLUMNS = ("service_name", "service_description", *DELIVERY_COMPONENTS,
                   *MANAGEMENT_COMPONENTS)
LIST_FIELDS = {"opening_hours", "persyaratan", "prosedur", "pengaduan", "dasar_hukum", "sarana",
               "kompetensi", "pengawasan"}
REQUIRED_COLUMNS = ("slug", "name", "service_name", *DELIVERY_COMPONENTS)
CSV_KEYS = frozenset({*AGENCY_COLUMNS, "head", "title", "services", "description",
                      *DELIVERY_COMPONENTS, *MANAGEMENT_COMPONENTS})
"""Keys a CSV can set; an existing file's other keys (record_type, ...) are kept."""

Locate = Callable[[str], tuple[Any, int | None, str]]
"""Maps a validation problem's field ("services.0.biaya") to (file, line, field) in the input."""


@dataclass
class Incoming:
    """One agency read from a spreadsheet, and where its values came from."""

    data: dict
    locate: Locate
    covers: Collection[str]  # keys the spreadsheet sets; others in an existing file are kept


@dataclass
class Change:
    path: Path
    text: str  # the file's new content
    diff: str  # unified diff against the current file ("" for an unchanged file)
    created: bool


@dataclass
class ImportResult:
    written: list[Path] = field(default_factory=list)
    would_write: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    skipped_rows: list[Problem] = field(default_factory=list)


def _cell_list(text: str) -> list[str]:
    parts = text.replace(" | ", "\n").splitlines()
    return [p.strip() for p in parts if p.strip()]


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError([Problem(path, None, "file", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise InputError([Problem(path, None, "file", f"not valid UTF-8 (byte {exc.start})",
                                  "export the spreadsheet as 'CSV UTF-8'")]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in AGENCY_COLUMNS + SERVICE_COLUMNS]
    problems = [Problem(path, 1, col, "required column missing") for col in missing]
    problems += [Problem(path, 1, col, "unknown column",
                         f"known: {', '.join(AGENCY_COLUMNS + SERVICE_COLUMNS)}") for col in unknown]
    if problems:
        raise InputError(problems)
    rows = []
    try:
        while True:
            start = reader.line_num + 1  # a quoted cell may span lines: name the row's first
            row = next(reader, None)
            if row is None:
                return rows
            rows.append((start, {k: (v or "").strip() for k, v in row.items() if k}))
    except csv.Error as exc:
        raise InputError([Problem(path, reader.line_num, "file", f"not valid CSV: {exc}")]) from None


def _agency_data(rows: list[tuple[int, dict[str, str]]]) -> dict:
    first = rows[0][1]
    data: dict = {}
    for column in AGENCY_COLUMNS:
        value = first.get(column, "")
        if not value or column in ("head_name", "head_title"):
            continue
        if column == "sample":
            data["sample"] = value.lower() in ("1", "true", "ya", "yes")
        else:
            data[column] = _cell_list(value) if column in LIST_FIELDS else value
    data["head"] = {"name": first.get("head_name", ""), "title": first.get("head_title", "")}
    data["services"] = [_service_data(row) for _, row in rows]
    return data


def _service_data(row: dict[str, str]) -> dict:
    service: dict = {"name": row.get("service_name", "")}
    if row.get("service_description"):
        service["description"] = row["service_description"]
    for column in (*DELIVERY_COMPONENTS, *MANAGEMENT_COMPONENTS):
        value = row.get(column, "")
        if value or column in DELIVERY_COMPONENTS:
            service[column] = _cell_list(value) if column in LIST_FIELDS else value
    return service


def read_csv(csv_path: Path) -> list[Incoming]:
    """The CSV's agencies; a problem names the CSV line of the agency's first row."""
    by_slug: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in _read_rows(csv_path):
        by_slug.setdefault(row.get("slug", ""), []).append((line, row))
    return [Incoming(_agency_data(rows), lambda name, line=rows[0][0]: (csv_path, line, name),
                     CSV_KEYS)
            for rows in by_slug.values()]


# --------------------------------------------------------------------------- shared path


def normalise(value: Any) -> Any:
    """The meaning of a value: a one-item list is its item, numbers are text, blanks vanish."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if normalise(v) not in ("", [], {}, None)}
    if isinstance(value, list):
        items = [normalise(v) for v in value]
        return items[0] if len(items) == 1 and not isinstance(items[0], dict) else items
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def merge(old: Any, new: Any, covers: Collection[str]) -> Any:
    """``new`` laid over ``old``: equal values keep the old form, uncovered keys stay."""
    if isinstance(old, dict) and isinstance(new, dict):
        merged = {key: merge(value, new[key], covers) if key in new else value
                  for key, value in old.items()
                  if key in new or key not in covers or normalise(value) in ("", [], {}, None)}
        merged.update((key, value) for key, value in new.items() if key not in old)
        return merged
    if isinstance(old, list) and isinstance(new, list) and normalise(old) != normalise(new) \
            and all(isinstance(item, dict) for item in itertools.chain(old, new)):
        return [merge(o, n, covers) if o is not None else n
                for o, n in itertools.zip_longest(old[:len(new)], new)]
    return old if normalise(old) == normalise(new) else new


def render(old_text: str, data: dict) -> str:
    """The agency file: the old file's leading comments, then the data in its key order."""
    header = "".join(itertools.takewhile(lambda line: line.startswith("#") or not line.strip(),
                                         old_text.splitlines(keepends=True)))
    return header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)


def _current(target: Path) -> tuple[str, Any]:
    try:
        text = target.read_text(encoding="utf-8")
        return text, yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError([Problem(target, None, "file", f"cannot read the current file: {exc}",
                                  "fix it with 'provisioner registry check' first")]) from None


def _plan_one(inventory: Inventory, incoming: Incoming, source: str,
              update_existing: bool) -> tuple[Change | None, list[Problem]]:
    slug = incoming.data.get("slug")
    target = inventory.root / "agencies" / f"{slug}.yml"
    exists = isinstance(slug, str) and LABEL_RE.match(slug) is not None and target.exists()
    if exists and not update_existing:
        file, line, _ = incoming.locate("slug")
        return None, [Problem(file, line, "slug", f"{target} already exists",
                              "pass --force to overwrite it")]
    old_text, old_data = _current(target) if exists else ("", None)
    data = merge(old_data, incoming.data, incoming.covers) if isinstance(old_data, dict) \
        else incoming.data
    _, found = validate_agency_data(data, target, inventory.settings.zone, inventory.hosts)
    if found:
        return None, [Problem(*incoming.locate(p.field), p.message, p.hint) for p in found]
    if exists and data == old_data:
        return Change(target, old_text, "", created=False), []
    if not exists:
        old_text = (f"# Imported from {source}; edit freely, then run "
                    "'provisioner registry check'.\n")
    text = render(old_text, data)
    diff = "".join(difflib.unified_diff(
        old_text.splitlines(keepends=True) if exists else [], text.splitlines(keepends=True),
        fromfile=str(target) if exists else "/dev/null", tofile=str(target)))
    return Change(target, text, diff, created=not exists), []


def plan_import(inventory: Inventory, agencies: list[Incoming], *, source: str,
                update_existing: bool, skip_bad: bool = False,
                read_problems: Collection[Problem] = ()) -> ImportResult:
    """Merge and validate every agency; raise InputError with every problem (unless skip_bad).

    ``read_problems``: cells the reader refused, reported with the rest (a cell named
    there is not named again for the blank it left)."""
    result, problems = ImportResult(), list(read_problems)
    named = {p.file for p in read_problems}
    for incoming in agencies:
        change, found = _plan_one(inventory, incoming, source, update_existing)
        found = [p for p in found if p.file not in named]
        if found and skip_bad:
            result.skipped_rows += found
        problems += found if not skip_bad else []
        if change and change.diff:
            result.changes.append(change)
            result.would_write.append(change.path)
        elif change:
            result.unchanged.append(change.path)
    if problems:
        raise InputError(problems)
    return result


def apply_plan(result: ImportResult) -> ImportResult:
    """Write the planned changes (each file replaced atomically, its mode kept)."""
    for change in result.changes:
        mode = None if change.created else change.path.stat().st_mode & 0o7777
        hostlib.write_atomic(change.path, change.text.encode("utf-8"), mode, create=False)
        result.written.append(change.path)
    result.would_write = []
    return result
