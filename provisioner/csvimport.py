"""Create agency files from a spreadsheet export (CSV, one row per service).

Rows that share a slug become one agency with several services; agency fields are
taken from the agency's first row. Cells that hold a list (requirements, procedure
steps, opening hours) separate items with line breaks or " | ". Every agency is
validated with the same rules as ``registry check`` before anything is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InputError, Problem
from .models import DELIVERY_COMPONENTS, MANAGEMENT_COMPONENTS, Inventory
from .registry import validate_agency_data

AGENCY_COLUMNS = ("slug", "name", "short_name", "host", "external", "subdomain", "description",
                  "address", "phone", "email", "opening_hours", "head_name", "head_title",
                  "maklumat", "sample")
SERVICE_COLUMNS = ("service_name", "service_description", *DELIVERY_COMPONENTS,
                   *MANAGEMENT_COMPONENTS)
LIST_FIELDS = {"opening_hours", "persyaratan", "prosedur", "pengaduan", "dasar_hukum", "sarana",
               "kompetensi", "pengawasan"}
REQUIRED_COLUMNS = ("slug", "name", "service_name", *DELIVERY_COMPONENTS)


@dataclass
class ImportResult:
    written: list[Path] = field(default_factory=list)
    would_write: list[Path] = field(default_factory=list)
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


def import_csv(inventory: Inventory, csv_path: Path, *, force: bool = False,
               skip_bad: bool = False, dry_run: bool = False) -> ImportResult:
    """Validate every agency in the CSV, then write agencies/<slug>.yml for each.

    Nothing is written when a row is unusable (unless skip_bad) or a file exists
    (unless force): problems raise InputError naming the CSV line and column.
    """
    by_slug: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in _read_rows(csv_path):
        by_slug.setdefault(row.get("slug", ""), []).append((line, row))
    agency_dir = inventory.root / "agencies"
    result, ready, problems = ImportResult(), [], []
    for slug, rows in by_slug.items():
        target = agency_dir / f"{slug}.yml"
        data = _agency_data(rows)
        _, found = validate_agency_data(data, target, inventory.settings.zone, inventory.hosts)
        found = [Problem(csv_path, rows[0][0], p.field, p.message, p.hint) for p in found]
        if not found and target.exists() and not force:
            found = [Problem(csv_path, rows[0][0], "slug", f"{target} already exists",
                             "pass --force to overwrite it")]
        if found and skip_bad:
            result.skipped_rows += found
        elif found:
            problems += found
        else:
            ready.append((target, data))
    if problems:
        raise InputError(problems)
    for target, data in ready:
        if dry_run:
            result.would_write.append(target)
            continue
        header = f"# Imported from {csv_path.name}; edit freely, then run 'provisioner registry check'.\n"
        target.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False,
                                                  width=100), encoding="utf-8")
        result.written.append(target)
    return result
