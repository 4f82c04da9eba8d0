"""The registry as a workbook an office clerk can fill in, and back (``registry export/import``).

Sheets: Petunjuk (instructions, Bahasa Indonesia), Instansi (one row per agency),
Layanan (one row per service), Pengaduan (complaint channels). A cell that holds a
list (requirements, procedure steps, opening hours) has one item per line.

A workbook comes from outside: it is refused unless it is a zip whose members
unpack to at most MAX_UNCOMPRESSED bytes, opened read-only, and every cell is
checked (formulas, control characters, dates, numbers in text cells, length);
a problem names its ``sheet!cell``. Formulas are never evaluated: the workbook is
read with ``data_only=False`` so a formula shows as its ``=...`` text and is refused
(with ``data_only=True`` openpyxl would hand back whatever result Excel cached, or
nothing, and the cell could not be named as a formula).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from ..errors import InputError, Problem, UsageError
from ..hosts import hostlib
from . import yamlsrc
from .csvimport import Incoming
from .fields import CONTROL_RE
from .models import DELIVERY_COMPONENTS, MANAGEMENT_COMPONENTS, RECORD_TYPES, Agency, Inventory

C1_OR_BIDI_RE = re.compile("[\x80-\x9f\u202a-\u202e\u2066-\u2069]")
"""What XML lets through that a terminal or a page would act on (CSI, bidi overrides)."""

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_UNCOMPRESSED = 100 * 1024 * 1024  # a zip bomb unpacks to far more
MAX_CELL_CHARS = 10_000
MAX_ROWS = 5_000  # per sheet
VALIDATED_ROWS = 1_000  # rows below the header that get the drop-down lists
YES, NO = "ya", "tidak"
REQUIRED_FILL = PatternFill("solid", fgColor="FFE699")
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")


@dataclass(frozen=True)
class Column:
    key: str  # the agency file's key; "head.name": a key of a nested mapping
    label: str  # header in Bahasa Indonesia ("*" is added for a required one)
    required: bool = False
    lines: bool = False  # a list: one item per line
    width: int = 24
    choices: str | None = None  # "hosts", "record_type", "status", "yesno", "agency"
    phone: bool = False  # a number here lost its leading 0: refused with a hint

    @property
    def header(self) -> str:
        return f"{self.label} *" if self.required else self.label


AGENCY_SHEET = "Instansi"
SERVICE_SHEET = "Layanan"
CHANNEL_SHEET = "Pengaduan"
AGENCY_COLUMNS = (
    Column("slug", "Kode instansi", True, width=16),
    Column("name", "Nama instansi", True, width=40),
    Column("short_name", "Nama singkat", True, width=16),
    Column("host", "Server", choices="hosts", width=12),
    Column("external", "Situs di luar (URL)", width=30),
    Column("subdomain", "Subdomain", width=16),
    Column("record_type", "Jenis rekaman DNS", choices="record_type", width=12),
    Column("status", "Status", choices="status", width=12),
    Column("description", "Uraian singkat", width=50),
    Column("address", "Alamat kantor", True, width=40),
    Column("phone", "Telepon", True, width=18, phone=True),
    Column("email", "Surel", True, width=28),
    Column("opening_hours", "Jam pelayanan", True, lines=True, width=36),
    Column("head.name", "Nama kepala", True, width=28),
    Column("head.title", "Jabatan kepala", True, width=20),
    Column("maklumat", "Maklumat pelayanan", True, width=60),
    Column("sample", "Isi contoh", choices="yesno", width=10),
)
COMPONENT_LABELS = {
    "persyaratan": "Persyaratan", "prosedur": "Sistem, mekanisme dan prosedur",
    "jangka_waktu": "Jangka waktu penyelesaian", "biaya": "Biaya/tarif",
    "produk": "Produk pelayanan", "pengaduan": "Penanganan pengaduan, saran dan masukan",
    "dasar_hukum": "Dasar hukum", "sarana": "Sarana dan prasarana",
    "kompetensi": "Kompetensi pelaksana", "pengawasan": "Pengawasan internal",
    "jumlah_pelaksana": "Jumlah pelaksana", "jaminan_pelayanan": "Jaminan pelayanan",
    "jaminan_keamanan": "Jaminan keamanan dan keselamatan",
    "evaluasi_kinerja": "Evaluasi kinerja pelaksana",
}
SERVICE_COLUMNS = (
    Column("agency", "Kode instansi", True, choices="agency", width=16),
    Column("name", "Nama layanan", True, width=36),
    Column("slug", "Kode halaman", width=20),
    Column("description", "Uraian layanan", width=40),
    *(Column(key, COMPONENT_LABELS[key], True, lines=True, width=40) for key in DELIVERY_COMPONENTS),
    *(Column(key, COMPONENT_LABELS[key], lines=True, width=30) for key in MANAGEMENT_COMPONENTS),
)
CHANNEL_COLUMNS = (
    Column("agency", "Kode instansi", True, choices="agency", width=16),
    Column("name", "Nama saluran", True, width=30),
    Column("contact", "Kontak", True, width=50),
    Column("url", "Alamat web (URL)", width=36),
)
SHEETS = {AGENCY_SHEET: AGENCY_COLUMNS, SERVICE_SHEET: SERVICE_COLUMNS,
          CHANNEL_SHEET: CHANNEL_COLUMNS}
COVERS = frozenset({"slug", "name", "short_name", "host", "external", "subdomain", "record_type",
                    "status", "description", "address", "phone", "email", "opening_hours",
                    "head", "title", "maklumat", "sample", "services", "complaint_channels",
                    "contact", "url", *DELIVERY_COMPONENTS, *MANAGEMENT_COMPONENTS})
"""Keys the workbook sets; an agency file's other keys (e.g. content_access) are kept."""

INSTRUCTIONS = (
    "Petunjuk pengisian standar pelayanan",
    "",
    "Berkas ini memuat data situs perangkat daerah (instansi) yang dikelola Dinas Kominfo.",
    "Lembar 'Instansi': satu baris untuk setiap instansi (nama, alamat, telepon, surel, jam "
    "pelayanan, kepala, maklumat pelayanan).",
    "Lembar 'Layanan': satu baris untuk setiap layanan, dengan enam komponen standar "
    "pelayanan (persyaratan, prosedur, jangka waktu, biaya/tarif, produk, penanganan "
    "pengaduan) dan komponen pengelolaan yang tidak wajib.",
    "Lembar 'Pengaduan': saluran pengaduan instansi (SP4N-LAPOR! selalu ditampilkan).",
    "",
    "Kolom bertanda * dan berwarna kuning wajib diisi.",
    "Isian yang berupa daftar (persyaratan, langkah prosedur, jam pelayanan): satu butir "
    "per baris. Di dalam sel, tekan Alt+Enter (Windows) atau Option+Enter (Mac) untuk baris baru.",
    "Kolom 'Kode instansi' menghubungkan baris Layanan dan Pengaduan dengan instansinya: "
    "jangan mengubah kode yang sudah ada.",
    "Pilih isian dari daftar bila sel menyediakan daftar pilihan (server, ya/tidak).",
    "Ketik nomor telepon sebagai teks (misalnya 0543 21170) agar angka 0 di depan tidak hilang.",
    "Jangan memakai rumus (=...), jangan menggabungkan sel, dan jangan mengubah judul kolom "
    "atau nama lembar.",
    "",
    "Setelah selesai, simpan sebagai berkas Excel (.xlsx) dan kirim kembali kepada "
    "Dinas Kominfo. Petugas akan memeriksa setiap sel dan menunjukkan perubahan sebelum "
    "situs diperbarui.",
)


# --------------------------------------------------------------------------- export


def _cell_text(value: Any, column: Column) -> Any:
    if value is None:
        return None
    if column.choices == "yesno":
        return YES if value is True else NO if value is False else str(value)
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    return str(value) if not isinstance(value, str) else value


def _nested(data: dict, key: str) -> Any:
    """``data[key]``, or for "head.name" ``data["head"]["name"]`` (None when absent)."""
    first, _, rest = key.partition(".")
    value = data.get(first)
    if not rest:
        return value
    return value.get(rest) if isinstance(value, dict) else None


def _rows(agencies: list[Agency]) -> dict[str, list[list[Any]]]:
    rows: dict[str, list[list[Any]]] = {name: [] for name in SHEETS}
    for agency in agencies:
        data, _ = yamlsrc.load(agency.source)
        rows[AGENCY_SHEET].append([_cell_text(_nested(data, c.key), c) for c in AGENCY_COLUMNS])
        for key, sheet in (("services", SERVICE_SHEET), ("complaint_channels", CHANNEL_SHEET)):
            for item in data.get(key) or []:
                item = {**item, "agency": agency.slug}
                rows[sheet].append([_cell_text(item.get(c.key), c) for c in SHEETS[sheet]])
    return rows


def _choice_lists(inventory: Inventory, agency_rows: int) -> dict[str, str]:
    return {
        "hosts": '"' + ",".join(sorted(inventory.hosts)) + '"',
        "record_type": '"' + ",".join(RECORD_TYPES) + '"',
        "status": '"active,offboarded"',
        "yesno": f'"{YES},{NO}"',
        "agency": f"={AGENCY_SHEET}!$A$2:$A${max(agency_rows, VALIDATED_ROWS) + 1}",
    }


def _fill_sheet(ws: Worksheet, columns: tuple[Column, ...], rows: list[list[Any]],
                choices: dict[str, str]) -> None:
    ws.append([c.header for c in columns])
    for row in rows:
        ws.append(row)
    last = max(len(rows), VALIDATED_ROWS) + 1
    for index, column in enumerate(columns, start=1):
        letter = get_column_letter(index)
        header = ws.cell(row=1, column=index)
        header.font = Font(bold=True)
        header.fill = REQUIRED_FILL if column.required else HEADER_FILL
        header.alignment = Alignment(wrap_text=True, vertical="top")
        ws.column_dimensions[letter].width = column.width
        # Text format, also for rows the clerk adds: a typed phone number keeps its leading 0.
        ws.column_dimensions[letter].number_format = "@"
        for row_index in range(2, len(rows) + 2):
            cell = ws.cell(row=row_index, column=index)
            cell.number_format = "@"
            cell.alignment = Alignment(wrap_text=True, vertical="top")
            if cell.data_type == "f":  # registry text starting with "=": never a live formula
                cell.data_type = "s"
        if column.choices:
            validation = DataValidation(type="list", formula1=choices[column.choices],
                                        allow_blank=not column.required)
            validation.error = "Pilih isian dari daftar."
            validation.add(f"{letter}2:{letter}{last}")
            ws.add_data_validation(validation)
    ws.freeze_panes = "A2"


def export_workbook(inventory: Inventory, agencies: list[Agency], target: Path) -> dict[str, int]:
    """Write the workbook; return the number of rows on each data sheet."""
    rows = _rows(agencies)
    choices = _choice_lists(inventory, len(rows[AGENCY_SHEET]))
    workbook = openpyxl.Workbook()
    guide = workbook.active
    guide.title = "Petunjuk"
    guide.column_dimensions["A"].width = 120
    for line in INSTRUCTIONS:
        guide.append([line])
        guide.cell(row=guide.max_row, column=1).alignment = Alignment(wrap_text=True)
    guide["A1"].font = Font(bold=True, size=14)
    for name, columns in SHEETS.items():
        _fill_sheet(workbook.create_sheet(name), columns, rows[name], choices)
    data = io.BytesIO()
    workbook.save(data)
    try:
        hostlib.write_atomic(target, data.getvalue(), mode=None, create=False)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write: {exc.strerror}") from None
    return {name: len(sheet_rows) for name, sheet_rows in rows.items()}


# --------------------------------------------------------------------------- import


def _refuse(where: str, message: str, hint: str | None = None) -> InputError:
    return InputError([Problem(where, None, "file", message, hint)])


def check_archive(path: Path) -> None:
    """Refuse what is not a plausible .xlsx before openpyxl unpacks anything."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _refuse(str(path), f"cannot read: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise _refuse(str(path), f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    not_xlsx = "not an Excel workbook (.xlsx)"
    hint = "save it in Excel or LibreOffice as 'Excel 2007-365 (.xlsx)'"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        raise _refuse(str(path), not_xlsx, hint) from None
    if not any(m.filename == "xl/workbook.xml" for m in members):
        raise _refuse(str(path), not_xlsx, hint)
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UNCOMPRESSED:
        raise _refuse(str(path), f"unpacks to {unpacked} bytes, more than "
                                 f"{MAX_UNCOMPRESSED // 2**20} MiB", "is this really a registry workbook?")


def _cell_value(raw: Any, column: Column, where: str) -> tuple[Any, Problem | None]:
    """A cell's value for the agency file ("" for blank), or the problem with it."""
    def bad(message: str, hint: str | None = None) -> tuple[Any, Problem]:
        return "", Problem(where, None, column.key, message, hint)

    if raw is None:
        return "", None
    if isinstance(raw, (dt.datetime, dt.date, dt.time)):
        return bad("a date or time, not text", "format the cell as Text and type it again")
    if isinstance(raw, bool):
        raw = YES if raw else NO
    if isinstance(raw, (int, float)):
        if column.phone:
            return bad("a number, not text: a leading 0 is lost in a number cell",
                       "format the cell as Text and type the number again, e.g. 0543 21170")
        raw = str(int(raw)) if float(raw).is_integer() else str(raw)
    if not isinstance(raw, str):
        return bad("not text")
    if len(raw) > MAX_CELL_CHARS:
        return bad(f"longer than {MAX_CELL_CHARS} characters")
    if raw.startswith("="):
        return bad("a formula", "type the text itself, not a formula (=...)")
    if CONTROL_RE.search(raw) or C1_OR_BIDI_RE.search(raw):
        return bad("contains a control character", "retype the text; do not paste it from another program")
    text = raw.strip()
    if column.choices == "yesno" and text:
        if text.lower() not in (YES, NO):
            return bad(f"must be '{YES}' or '{NO}'")
        return text.lower() == YES, None
    if column.lines and "\n" in text:
        return [line.strip() for line in text.splitlines() if line.strip()], None
    return text, None


def _headers(sheet: str, first_row: tuple) -> tuple[list[Column | None], list[Problem]]:
    by_header = {}
    for column in SHEETS[sheet]:
        by_header[column.label.casefold()] = by_header[column.key.casefold()] = column
    found, problems = [], []
    for index, raw in enumerate(first_row, start=1):
        text = str(raw).strip().removesuffix("*").strip() if raw is not None else ""
        column = by_header.get(text.casefold())
        if text and column is None:
            problems.append(Problem(f"{sheet}!{get_column_letter(index)}1", None, "header",
                                    f"unknown column {text[:60]!r}", "keep the exported headers"))
        found.append(column)
    for column in SHEETS[sheet]:
        if column.required and column not in found:
            problems.append(Problem(f"{sheet}!1", None, column.key, "required column missing",
                                    f"add the column '{column.header}'"))
    return found, problems


@dataclass
class _Row:
    sheet: str
    number: int
    values: dict[str, Any]
    cells: dict[str, str]  # key -> "Sheet!D7"


def _sheet_rows(workbook: Any, sheet: str) -> tuple[list[_Row], list[Problem], list[Problem]]:
    """The sheet's non-blank rows, problems with its layout, and the cells refused."""
    if sheet not in workbook.sheetnames:
        return [], [Problem(sheet, None, "sheet", "sheet missing", "keep the exported sheets")], []
    ws = workbook[sheet]
    rows_iter = ws.iter_rows(values_only=True)
    columns, layout = _headers(sheet, next(rows_iter, ()))
    rows, problems = [], []
    for number, raw_row in enumerate(rows_iter, start=2):
        if number > MAX_ROWS + 1:
            problems.append(Problem(f"{sheet}!A{number}", None, "sheet",
                                    f"more than {MAX_ROWS} rows"))
            break
        row = _Row(sheet, number, {}, {})
        for index, (column, raw) in enumerate(zip(columns, raw_row), start=1):
            if column is None:
                continue
            where = f"{sheet}!{get_column_letter(index)}{number}"
            value, problem = _cell_value(raw, column, where)
            if problem:
                problems.append(problem)
            row.cells[column.key] = where
            if value != "":
                row.values[column.key] = value
        if row.values:
            rows.append(row)
    return rows, layout, problems


def _agency(row: _Row, services: list[_Row], channels: list[_Row]) -> Incoming:
    data: dict = {}
    cells = {"": f"{row.sheet}!A{row.number}"}
    for column in AGENCY_COLUMNS:
        key, _, sub = column.key.partition(".")
        cells[column.key] = row.cells.get(column.key, cells[""])
        cells.setdefault(key, cells[column.key])
        if column.key not in row.values:
            continue
        if sub:
            data.setdefault(key, {})[sub] = row.values[column.key]
        else:
            data[key] = row.values[column.key]
    for key, items in (("services", services), ("complaint_channels", channels)):
        cells[key] = cells[""]
        for index, item in enumerate(items):
            data.setdefault(key, []).append({k: v for k, v in item.values.items() if k != "agency"})
            cells[f"{key}.{index}"] = f"{item.sheet}!A{item.number}"
            cells.update((f"{key}.{index}.{k}", where) for k, where in item.cells.items())

    def locate(field: str) -> tuple[str, None, str]:
        parts = field.split(".")
        for end in range(len(parts), -1, -1):
            where = cells.get(".".join(parts[:end]))
            if where:
                names = [p for p in parts[:max(end, 1)] if not p.isdigit()]
                return where, None, names[-1] if names else field
        return cells[""], None, field

    return Incoming(data, locate, COVERS)


def read_workbook(path: Path) -> tuple[list[Incoming], list[Problem]]:
    """Every agency in the workbook, and every ``sheet!cell`` refused.

    A file that is not a usable workbook (or lacks a sheet or a required column)
    raises InputError at once."""
    check_archive(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except Exception as exc:  # openpyxl raises many kinds on a damaged archive
        raise _refuse(str(path), f"cannot open the workbook: {type(exc).__name__}",
                      "save it again in Excel or LibreOffice as .xlsx") from None
    try:
        sheets = {name: _sheet_rows(workbook, name) for name in SHEETS}
    finally:
        workbook.close()
    layout = [p for _, found, _ in sheets.values() for p in found]
    if layout:
        raise InputError(layout)
    problems = [p for _, _, found in sheets.values() for p in found]
    agencies: dict[str, _Row] = {}
    for row in sheets[AGENCY_SHEET][0]:
        slug = row.values.get("slug")
        if isinstance(slug, str) and slug in agencies:
            problems.append(Problem(row.cells["slug"], None, "slug", f"{slug!r} appears twice"))
        agencies.setdefault(slug, row)
    children: dict[str, dict[Any, list[_Row]]] = {SERVICE_SHEET: {}, CHANNEL_SHEET: {}}
    for sheet, by_agency in children.items():
        for row in sheets[sheet][0]:
            slug = row.values.get("agency")
            if slug not in agencies:
                missing = f"no agency {slug!r} on the Instansi sheet" if slug else "missing"
                problems.append(Problem(row.cells.get("agency", f"{sheet}!A{row.number}"), None,
                                        "agency", missing,
                                        "use a code from the Instansi sheet's first column"))
            by_agency.setdefault(slug, []).append(row)
    return [_agency(row, children[SERVICE_SHEET].get(slug, []), children[CHANNEL_SHEET].get(slug, []))
            for slug, row in agencies.items()], problems
