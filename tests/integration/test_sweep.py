"""`provisioner sweep` over a few real lab sites, in every report format, plus history.

The sites are set up like test_verify's (signed DNS updates, vhosts and files on the lab
hosts, a throwaway CA), under their own names so both modules can run in one session.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest
from lxml import html as lxml_html

from .conftest import TestLab
from .test_verify import SiteSpec, Sites, black_hole, served_sites

pytestmark = pytest.mark.integration

PROM_SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9][0-9.e+]*$')


@pytest.fixture(scope="module")
def sweep_sites(lab: TestLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    hole = f"{lab.prefix}.14"
    specs = [SiteSpec("s-healthy"),
             SiteSpec("s-healthy3", served_by="web3"),  # the production-shaped host
             SiteSpec("s-expired", served_by="web2", cert="expired"),
             SiteSpec("s-default", served_by="web2", content="nginx-default"),
             SiteSpec("s-external", served_by="web2", external=True, content="external"),
             SiteSpec("s-hang", external=True, address=hole)]
    with black_hole(hole), served_sites(lab, tmp_path_factory.mktemp("sweep"), specs) as sites:
        yield sites


def sweep(sites: Sites, *args: str):
    return sites.cli("sweep", "--ca", str(sites.ca_file), "--timeout", "0.5",
                     "--concurrency", "4", *args)


SUMMARY = "active 3/6 (50 %), 1 certificate(s) expiring within 21 days"


def test_sweep_reports_in_every_format(sweep_sites: Sites, tmp_path: Path) -> None:
    table = sweep(sweep_sites)
    assert table.exit_code == 1  # not every agency is active: alert
    assert SUMMARY in table.stdout
    assert "s-healthy" in table.stdout and "tls.chain" in table.stdout

    outputs = {}
    for fmt in ("jsonl", "junit", "prom", "html"):
        path = tmp_path / f"report.{fmt}"
        result = sweep(sweep_sites, "--format", fmt, "-o", str(path))
        assert result.exit_code == 1, result.stderr
        assert SUMMARY in result.stderr and result.stdout == ""
        outputs[fmt] = path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"report.{f}" for f in outputs)  # atomic writes leave no temp files

    records = [json.loads(line) for line in outputs["jsonl"].splitlines()]
    by_agency = {r["agency"]: r for r in records}
    assert sorted(by_agency) == ["s-default", "s-expired", "s-external", "s-hang", "s-healthy",
                                 "s-healthy3"]
    assert {r["schema"] for r in records} == {"provisioner/sweep-record/v1"}
    assert sorted(a for a, r in by_agency.items() if r["active"]) == ["s-external", "s-healthy",
                                                                       "s-healthy3"]
    # errors are retried inside the site's deadline only: a hanging server leaves none
    assert {r["attempts"] for r in records} == {1} and by_agency["s-hang"]["reasons"]
    assert by_agency["s-expired"]["cert"]["days_left"] < 0
    healthy = by_agency["s-healthy"]["publication"]
    assert {k: healthy[k] for k in ("score", "band", "components")} == {
        "score": 100.0, "band": "A", "components": dict.fromkeys(
            ("persyaratan", "prosedur", "waktu", "biaya", "produk", "pengaduan", "maklumat",
             "lapor"), True)}
    assert set(healthy["evidence"]) == set(healthy["components"])  # page and snippet each
    assert any(r.startswith("https.content: nginx default page")
               for r in by_agency["s-default"]["reasons"])

    suites = ET.fromstring(outputs["junit"]).findall("testsuite")
    assert [s.get("name") for s in suites] == [r["agency"] for r in records]
    hang = next(s for s in suites if s.get("name") == "s-hang")
    assert int(hang.get("errors")) >= 5 and hang.find("testcase/error") is not None

    samples = [line for line in outputs["prom"].splitlines() if not line.startswith("#")]
    assert all(PROM_SAMPLE.match(line) for line in samples), samples
    assert "provisioner_sweep_active_ratio 0.5" in samples
    assert 'provisioner_agency_active{agency="s-healthy"} 1' in samples

    page = lxml_html.fromstring(outputs["html"])
    assert page.get("lang") == "id"
    assert "50,0\u00a0%" in page.xpath("//div[contains(@class, 'big')]")[0].text_content()
    assert page.findall(".//svg"), "the trend chart appears once there are two sweeps"
    assert len(page.xpath("//tbody")[0].findall("tr")) == 6


def test_history_shows_the_trend(sweep_sites: Sites, tmp_path: Path) -> None:
    two = sweep(sweep_sites, "--format", "json", "-o", str(tmp_path / "sweep.json"),
                "--workers", "2")
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert two.exit_code == 1 and document["summary"]["active"] == 3
    assert [r["agency"] for r in document["records"]] == [
        "s-default", "s-expired", "s-external", "s-hang", "s-healthy",
        "s-healthy3"]  # inventory order
    assert [r["attempts"] for r in document["records"]] == [1] * 6
    overall = sweep_sites.cli("history", "--format", "json", "--limit", "3")
    points = json.loads(overall.stdout)
    assert overall.exit_code == 0 and len(points) == 3
    assert points[-1]["active_pct"] == 50.0 and points[-1]["total"] == 6
    assert [p["sweep_id"] for p in points] == sorted(p["sweep_id"] for p in points)
    one = json.loads(sweep_sites.cli("history", "--agency", "s-healthy", "--format",
                                     "json").stdout)
    assert one and all(p["active"] and p["band"] == "A" for p in one)
    table = sweep_sites.cli("history")
    assert table.exit_code == 0 and "active_pct" in table.stdout
