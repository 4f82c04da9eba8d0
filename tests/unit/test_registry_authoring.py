"""`registry import` (CSV) and `init`: new inventory files, validated before anything is written."""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
from pathlib import Path

import yaml

from .conftest import SampleInventory, run_cli, tree_digest

COLUMNS = ["slug", "name", "short_name", "host", "address", "phone", "email", "opening_hours",
           "head_name", "head_title", "maklumat", "service_name", "persyaratan", "prosedur",
           "jangka_waktu", "biaya", "produk", "pengaduan"]


def row(slug: str, service: str, **overrides: str) -> dict[str, str]:
    base = {
        "slug": slug, "name": f"Dinas {slug.title()} Kabupaten Paser", "short_name": slug.upper(),
        "host": "web1", "address": "Jl. Contoh No. 1, Tanah Grogot", "phone": "(0543) 21000",
        "email": f"{slug}@paserkab.go.id", "opening_hours": "Senin–Kamis 07.30–16.00 | Jumat 07.30–11.00",
        "head_name": "Nama Kepala (contoh)", "head_title": "Kepala Dinas",
        "maklumat": "Kami sanggup melayani sesuai standar.", "service_name": service,
        "persyaratan": "Fotokopi KTP\nSurat permohonan", "prosedur": "Daftar | Periksa | Terbit",
        "jangka_waktu": "3 hari kerja", "biaya": "Gratis", "produk": "Surat keterangan",
        "pengaduan": "SP4N-LAPOR! https://www.lapor.go.id",
    }
    base.update(overrides)
    return base


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_import_groups_services_and_validates(sample: SampleInventory, tmp_path: Path):
    csv_path = write_csv(tmp_path / "opd.csv", [row("dispar", "Izin Usaha"),
                                                row("dispar", "Tanda Daftar"),
                                                row("distan", "Rekomendasi Pupuk")])
    result = sample.cli("registry", "import", str(csv_path))
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(sample.agency_path("dispar").read_text(encoding="utf-8"))
    assert [s["name"] for s in data["services"]] == ["Izin Usaha", "Tanda Daftar"]
    assert data["services"][0]["persyaratan"] == ["Fotokopi KTP", "Surat permohonan"]
    assert data["opening_hours"] == ["Senin–Kamis 07.30–16.00", "Jumat 07.30–11.00"]
    assert sample.cli("registry", "check").exit_code == 0
    listed = json.loads(sample.cli("registry", "list", "--format", "json").stdout)
    assert {"dispar", "distan"} <= {r["slug"] for r in listed}


def test_import_refuses_existing_file_without_force(sample: SampleInventory, tmp_path: Path):
    csv_path = write_csv(tmp_path / "opd.csv", [row("dinkes", "Layanan Baru")])
    before = tree_digest(sample.root)
    result = sample.cli("registry", "import", str(csv_path))
    assert result.exit_code == 2
    assert f"error: {csv_path}:2: slug: " in result.stderr and "--force" in result.stderr
    assert tree_digest(sample.root) == before
    assert sample.cli("registry", "import", "--force", str(csv_path)).exit_code == 0
    assert "Layanan Baru" in sample.agency_path("dinkes").read_text(encoding="utf-8")


def test_import_bad_row_writes_nothing_and_names_line_and_column(sample: SampleInventory,
                                                                 tmp_path: Path):
    csv_path = write_csv(tmp_path / "opd.csv", [row("dispar", "Izin Usaha"),
                                                row("bad;slug", "X"),
                                                row("distan", "Pupuk", biaya="")])
    before = tree_digest(sample.root)
    result = sample.cli("registry", "import", str(csv_path))
    assert result.exit_code == 2
    # each row spans two lines: persyaratan holds a line break
    assert f"error: {csv_path}:4: slug: not a valid DNS label" in result.stderr
    assert f"error: {csv_path}:6: services.0.biaya:" in result.stderr
    assert tree_digest(sample.root) == before


def test_import_skip_bad_writes_usable_rows_and_reports_the_rest(sample: SampleInventory,
                                                                 tmp_path: Path):
    csv_path = write_csv(tmp_path / "opd.csv", [row("dispar", "Izin Usaha"),
                                                row("distan", "Pupuk", host="web9")])
    result = sample.cli("registry", "import", "--skip-bad", str(csv_path))
    assert result.exit_code == 2
    assert sample.agency_path("dispar").exists()
    assert not sample.agency_path("distan").exists()
    assert "skipped:" in result.stderr and "web9" in result.stderr


def test_import_dry_run_and_missing_column(sample: SampleInventory, tmp_path: Path):
    csv_path = write_csv(tmp_path / "opd.csv", [row("dispar", "Izin Usaha")])
    result = sample.cli("registry", "import", "--dry-run", str(csv_path))
    assert result.exit_code == 0 and "would write" in result.stdout
    assert not sample.agency_path("dispar").exists()
    broken = tmp_path / "broken.csv"
    broken.write_text("slug,name\nx,y\n", encoding="utf-8")
    result = sample.cli("registry", "import", str(broken))
    assert result.exit_code == 2 and f"error: {broken}:1: biaya: required column missing" in result.stderr


def test_import_non_utf8(sample: SampleInventory, tmp_path: Path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("slug,name\nx,Dinas Pariwisata \xe9\n".encode("latin-1"))
    result = sample.cli("registry", "import", str(latin))
    assert result.exit_code == 2 and "not valid UTF-8" in result.stderr


def test_init_creates_an_inventory_that_checks_once_the_key_exists(tmp_path: Path):
    target = tmp_path / "kutaikab"
    result = run_cli("init", str(target), "--zone", "kutaikab.go.id")
    assert result.exit_code == 0, result.stderr
    assert (target / "agencies/contoh.yml").exists()
    state = tmp_path / "state"
    check = run_cli("--inventory", str(target), "--state-dir", str(state), "registry", "check")
    assert check.exit_code == 2
    assert check.stderr.count("error: ") == 1 and "tsig_key_file: file not found" in check.stderr
    (state / "keys").mkdir(parents=True)
    key = state / "keys/tsig.key"
    secret = base64.b64encode(secrets.token_bytes(32)).decode()  # made here, never committed
    key.write_text(f'key "provisioner" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    key.chmod(0o600)
    check = run_cli("--inventory", str(target), "--state-dir", str(state), "registry", "check")
    assert check.exit_code == 0, check.stderr
    assert "zone kutaikab.go.id" in check.stdout


def test_init_refuses_bad_zone_and_non_empty_folder(tmp_path: Path):
    result = run_cli("init", str(tmp_path / "x"), "--zone", "bad zone")
    assert result.exit_code == 2 and "--zone" in result.stderr
    assert not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    (tmp_path / "y/keep.txt").write_text("mine")
    result = run_cli("init", str(tmp_path / "y"), "--zone", "kutaikab.go.id")
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["keep.txt"]
