"""`registry export` / `registry import FILE.xlsx`: the clerk's workbook, checked cell by cell."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from provisioner.registry import xlsx
from provisioner.registry.csvimport import merge
from provisioner.registry.load import load_inventory

from .conftest import SAMPLE, SampleInventory, tree_digest


def column_of(sheet: str, key: str) -> str:
    keys = [c.key for c in xlsx.SHEETS[sheet]]
    return get_column_letter(keys.index(key) + 1)


def export(sample: SampleInventory, tmp_path: Path, *args: str) -> Path:
    target = tmp_path / "opd.xlsx"
    result = sample.cli("registry", "export", *(args or ("--all",)), "-o", str(target))
    assert result.exit_code == 0, result.stderr
    return target


def edit(path: Path, sheet: str, cell: str, value: object) -> Path:
    workbook = openpyxl.load_workbook(path)
    workbook[sheet][cell] = value
    workbook.save(path)
    return path


def service_row(path: Path, agency: str, index: int = 0) -> int:
    """The Layanan row of the agency's index-th service."""
    ws = openpyxl.load_workbook(path)[xlsx.SERVICE_SHEET]
    rows = [r for r in range(2, ws.max_row + 1) if ws[f"A{r}"].value == agency]
    return rows[index]


def test_export_layout(sample: SampleInventory, tmp_path: Path):
    workbook = openpyxl.load_workbook(export(sample, tmp_path))
    assert workbook.sheetnames == ["Petunjuk", "Instansi", "Layanan", "Pengaduan"]
    assert "wajib diisi" in " ".join(str(c.value) for c in workbook["Petunjuk"]["A"])
    layanan = workbook["Layanan"]
    headers = [c.value for c in layanan[1]]
    assert headers[:2] == ["Kode instansi *", "Nama layanan *"]
    assert "Biaya/tarif *" in headers and "Dasar hukum" in headers
    biaya = layanan[f"{column_of('Layanan', 'biaya')}1"]
    assert biaya.fill.fgColor.rgb.endswith(xlsx.REQUIRED_FILL.fgColor.rgb[-6:])
    assert layanan[f"{column_of('Layanan', 'dasar_hukum')}1"].fill.fgColor.rgb != biaya.fill.fgColor.rgb
    assert all(workbook[s].freeze_panes == "A2" for s in ("Instansi", "Layanan", "Pengaduan"))
    row = service_row(tmp_path / "opd.xlsx", "dinkes")
    persyaratan = layanan[f"{column_of('Layanan', 'persyaratan')}{row}"]
    assert persyaratan.value.count("\n") == 3 and persyaratan.alignment.wrap_text
    instansi = workbook["Instansi"]
    formulas = {str(v.sqref).split(":")[0]: v.formula1
                for v in instansi.data_validations.dataValidation}
    hosts = load_inventory(sample.root, sample.state_dir).hosts
    assert "web1" in hosts
    assert formulas[f"{column_of('Instansi', 'host')}2"] == '"' + ",".join(sorted(hosts)) + '"'
    assert formulas[f"{column_of('Instansi', 'record_type')}2"] == '"A,CNAME"'
    assert formulas[f"{column_of('Instansi', 'sample')}2"] == '"ya,tidak"'
    assert [v.formula1 for v in layanan.data_validations.dataValidation] == ["=Instansi!$A$2:$A$1001"]
    assert instansi["A2"].value == "dinkes" and instansi[f"{column_of('Instansi', 'sample')}2"].value == "ya"


def test_whole_sample_inventory_round_trips_without_a_change(tmp_path: Path):
    root = tmp_path / "inventory"
    shutil.copytree(SAMPLE, root)
    whole = SampleInventory(root=root, state_dir=tmp_path / "state")
    before = tree_digest(root)
    path = export(whole, tmp_path)
    result = whole.cli("registry", "import", "--yes", "--format", "json", str(path))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == [] and summary["diffs"] == {}
    assert len(summary["unchanged"]) == len(list((root / "agencies").glob("*.yml")))
    assert tree_digest(root) == before


def test_edit_shows_a_diff_and_writes_only_with_yes(sample: SampleInventory, tmp_path: Path):
    path = export(sample, tmp_path)
    cell = f"{column_of('Layanan', 'biaya')}{service_row(path, 'dinkes')}"
    edit(path, "Layanan", cell, "Rp 10.000")
    before = tree_digest(sample.root)
    result = sample.cli("registry", "import", str(path))
    assert result.exit_code == 0, result.stderr
    assert "-  biaya: Tidak dipungut biaya" in result.stdout and "+  biaya: Rp 10.000" in result.stdout
    assert "nothing written; run again with --yes" in result.stdout
    assert tree_digest(sample.root) == before
    result = sample.cli("registry", "import", "--yes", str(path))
    assert result.exit_code == 0 and f"wrote {sample.agency_path('dinkes')}" in result.stdout
    text = sample.agency_path("dinkes").read_text(encoding="utf-8")
    assert text.startswith("# Dinas Kesehatan Kabupaten Paser\n")  # the comments stay
    assert sample.read("agencies/dinkes.yml")["services"][0]["biaya"] == "Rp 10.000"
    assert sample.cli("registry", "check").exit_code == 0
    again = sample.cli("registry", "import", str(path))
    assert "0 changed" in again.stdout


def test_new_agency_row_creates_a_file(sample: SampleInventory, tmp_path: Path):
    path = export(sample, tmp_path, "dinkes")
    workbook = openpyxl.load_workbook(path)
    for sheet in ("Instansi", "Layanan"):
        ws = workbook[sheet]
        ws.append([c.value for c in ws[2]])
        ws[f"A{ws.max_row}"] = "dispar"
    workbook["Instansi"][f"{column_of('Instansi', 'email')}3"] = "dispar@paserkab.go.id"
    workbook.save(path)
    result = sample.cli("registry", "import", "--yes", str(path))
    assert result.exit_code == 0, result.stderr
    assert "+++ " in result.stdout and sample.agency_path("dispar").exists()
    assert sample.cli("registry", "check").exit_code == 0


def test_every_bad_cell_is_named_and_nothing_is_written(sample: SampleInventory, tmp_path: Path):
    path = export(sample, tmp_path)
    row = service_row(path, "disdukcapil")
    biaya = f"{column_of('Layanan', 'biaya')}{row}"
    email = f"{column_of('Instansi', 'email')}3"
    edit(path, "Layanan", biaya, None)
    edit(path, "Instansi", email, "not-an-address")
    edit(path, "Pengaduan", "A2", "nosuch")
    edit(path, "Pengaduan", "A3", None)
    before = tree_digest(sample.root)
    result = sample.cli("registry", "import", "--yes", str(path))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert f"error: Layanan!{biaya}: biaya: missing (hint: required: a text or a list of texts)" in lines
    assert f"error: Instansi!{email}: email: not an e-mail address: 'not-an-address'" in lines
    assert any(line.startswith("error: Pengaduan!A2: agency: no agency 'nosuch'") for line in lines)
    assert any(line.startswith("error: Pengaduan!A3: agency: missing") for line in lines)
    assert tree_digest(sample.root) == before


@pytest.mark.parametrize(("value", "message"), [
    ("=HYPERLINK(\"http://x\")", "a formula (hint: type the text itself"),
    ("Rp\x7f10.000", "contains a control character"),
    ("Rp\u202e000.01", "contains a control character"),
    ("x" * (xlsx.MAX_CELL_CHARS + 1), f"longer than {xlsx.MAX_CELL_CHARS} characters"),
])
def test_hostile_cells_are_refused(sample: SampleInventory, tmp_path: Path, value: str, message: str):
    path = export(sample, tmp_path)
    cell = f"{column_of('Layanan', 'biaya')}{service_row(path, 'dinkes')}"
    edit(path, "Layanan", cell, value)
    before = tree_digest(sample.root)
    result = sample.cli("registry", "import", "--yes", str(path))
    assert result.exit_code == 2
    assert f"error: Layanan!{cell}: biaya: {message}" in result.stderr
    assert tree_digest(sample.root) == before


def test_phone_typed_as_a_number_is_refused_with_the_leading_zero_hint(sample: SampleInventory,
                                                                       tmp_path: Path):
    path = export(sample, tmp_path, "dinkes")
    cell = f"{column_of('Instansi', 'phone')}2"
    edit(path, "Instansi", cell, 54321170)
    result = sample.cli("registry", "import", str(path))
    assert result.exit_code == 2
    assert f"error: Instansi!{cell}: phone: a number, not text: a leading 0 is lost" in result.stderr
    assert "format the cell as Text" in result.stderr


def test_files_that_are_not_workbooks_are_refused(sample: SampleInventory, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "opd.xlsx"
    fake.write_text("slug,name\n", encoding="utf-8")
    result = sample.cli("registry", "import", str(fake))
    assert result.exit_code == 2 and "not an Excel workbook (.xlsx)" in result.stderr
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (2 * 2**20))
    assert bomb.stat().st_size < 2**20 // 10
    monkeypatch.setattr(xlsx, "MAX_UNCOMPRESSED", 2**20)
    result = sample.cli("registry", "import", str(bomb))
    assert result.exit_code == 2 and "more than 1 MiB" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_usage_and_json(sample: SampleInventory, tmp_path: Path):
    assert sample.cli("registry", "export", "-o", str(tmp_path / "x.xlsx")).exit_code == 2
    assert sample.cli("registry", "export", "dinkes", "-o", str(tmp_path / "x.csv")).exit_code == 2
    result = sample.cli("registry", "export", "dinkes", "dkisp", "-o", str(tmp_path / "x.xlsx"),
                        "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"]["Instansi"] == 2


def test_merge_keeps_keys_the_workbook_does_not_know_and_the_old_form_of_equal_values():
    old = {"slug": "dinkes", "content_access": {"keys": ["ssh-ed25519 AAAA x"]}, "phone": "(0543) 1",
           "services": [{"name": "A", "biaya": ["Gratis"], "prosedur": ["a", "b"]}]}
    new = {"slug": "dinkes", "phone": "(0543) 1",
           "services": [{"name": "A", "biaya": "Gratis", "prosedur": ["a", "c"]}]}
    merged = merge(old, new, xlsx.COVERS)
    assert merged["content_access"] == old["content_access"]
    assert merged["services"] == [{"name": "A", "biaya": ["Gratis"], "prosedur": ["a", "c"]}]



def test_a_missing_sheet_or_required_column_is_named(sample: SampleInventory, tmp_path: Path):
    path = export(sample, tmp_path, "dinkes")
    workbook = openpyxl.load_workbook(path)
    workbook["Layanan"][f"{column_of('Layanan', 'biaya')}1"] = "Harga"
    del workbook["Pengaduan"]
    workbook.save(path)
    result = sample.cli("registry", "import", str(path))
    assert result.exit_code == 2
    biaya = column_of("Layanan", "biaya")
    assert f"error: Layanan!{biaya}1: header: unknown column 'Harga'" in result.stderr
    assert "error: Layanan!1: biaya: required column missing" in result.stderr
    assert "error: Pengaduan: sheet: sheet missing" in result.stderr


def test_registry_text_starting_with_equals_is_exported_as_text(sample: SampleInventory,
                                                                tmp_path: Path):
    data = sample.read("agencies/dinkes.yml")
    data["services"][0]["biaya"] = "=Gratis"
    sample.write("agencies/dinkes.yml", data)
    path = export(sample, tmp_path, "dinkes")
    cell = openpyxl.load_workbook(path)["Layanan"][f"{column_of('Layanan', 'biaya')}2"]
    assert (cell.value, cell.data_type) == ("=Gratis", "s")
    assert sample.cli("registry", "export", "dinkes", "-o", str(tmp_path / "no/such.xlsx")).exit_code == 2
