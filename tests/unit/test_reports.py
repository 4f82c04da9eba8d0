"""The pure renderers of a sweep (JSON Lines, JUnit XML, Prometheus textfile, HTML) and the
summary figures they share, on hand-made sweep records."""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import html as lxml_html

from provisioner.verify.content import load_rules, score_publication
from provisioner.verify.history import SweepPoint
from provisioner.verify.model import AgencyResult, CertExpiry, CheckResult, Evidence, Status
from provisioner.verify.report import html, jsonl, junit, prom, write_atomic
from provisioner.verify.sweep import RECORD_SCHEMA, SweepResult, record_of, summarise

RULES = load_rules()
START = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.timezone.utc)
PASSING = ("dns.resolves", "dns.authoritative", "dns.consistent", "tls.chain", "tls.name",
           "https.status", "https.content")


def agency(slug: str, statuses: dict[str, Status], days_left: int | None = 60,
           published: tuple[str, ...] = ()) -> AgencyResult:
    checks = tuple(CheckResult(c, statuses.get(c, Status.PASS), f"{c} detail")
                   for c in (*PASSING, "https.headers", "dns.points_to_host"))
    publication = score_publication({}, RULES)
    if published:
        components = {i: i in published for i in RULES.ids}
        score = round(sum(14 if i in ("persyaratan", "prosedur", "waktu", "biaya", "produk",
                                      "pengaduan") else 8 for i in published), 1)
        publication = type(publication)(score, RULES.band(score).grade, components,
                                        {i: Evidence("/layanan/", f"{i} <b>\x1b[31m") for i in published},
                                        ("/",), ("/files/sop.pdf",))
    not_after = START + dt.timedelta(days=days_left) if days_left is not None else None
    return AgencyResult(slug, f"https://{slug}.paserkab.go.id/", checks, publication,
                        CertExpiry(not_after, days_left))


def sweep_of(results: list[AgencyResult]) -> SweepResult:
    records = tuple(record_of(r, f"Dinas {r.agency} <&>", START, RULES, 1) for r in results)
    return SweepResult(START, START + dt.timedelta(seconds=12.5), RULES.version, records,
                       summarise(records))


@pytest.fixture
def sweep() -> SweepResult:
    return sweep_of([
        agency("dinkes", {"https.headers": Status.WARN}, 60, tuple(RULES.ids)),
        agency("dinsos", {"tls.chain": Status.FAIL}, 3),
        agency("dishub", {"dns.authoritative": Status.ERROR, "dns.points_to_host": Status.SKIP},
               None),
        agency("distan", {}, 15, ("persyaratan", "biaya")),
    ])


def test_summary_figures(sweep: SweepResult) -> None:
    s = sweep.summary
    assert (s.total, s.active, s.active_pct) == (4, 2, 50.0)
    assert s.expiring == (("dinsos", 3), ("distan", 15))
    assert s.mean_score == round((100 + 0 + 0 + 28) / 4, 1)
    assert s.inactive == ("dinsos", "dishub")
    assert s.line() == ("active 2/4 (50 %), 2 certificate(s) expiring within 21 days, "
                        "mean publication score 32")


def test_jsonl_one_versioned_record_per_agency(sweep: SweepResult) -> None:
    lines = jsonl.render(sweep).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["agency"] for r in records] == ["dinkes", "dinsos", "dishub", "distan"]
    assert {r["schema"] for r in records} == {RECORD_SCHEMA}
    assert records[0]["publication"]["band"] == "A"
    assert records[1]["reasons"] == ["tls.chain: tls.chain detail"]
    assert set(records[0]) >= {"agency", "url", "active", "checks", "publication", "cert"}


def test_junit_suite_per_agency_case_per_check(sweep: SweepResult) -> None:
    root = ET.fromstring(junit.render(sweep))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["dinkes", "dinsos", "dishub", "distan"]
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) \
        == ("36", "1", "1", "1")
    dinsos = suites[1]
    failed = [c.get("name") for c in dinsos.findall("testcase") if c.find("failure") is not None]
    assert failed == ["tls.chain"]
    warned = suites[0].find("testcase[@name='https.headers']/system-out")
    assert warned is not None and warned.text.startswith("warning:")
    assert suites[2].find("testcase[@name='dns.authoritative']/error") is not None


PROM_LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? -?[0-9.e+]+$')


def test_prometheus_textfile(sweep: SweepResult) -> None:
    text = prom.render(sweep)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(PROM_LINE.match(line) for line in samples), [
        line for line in samples if not PROM_LINE.match(line)]
    assert "provisioner_sweep_active_ratio 0.5" in samples
    assert 'provisioner_check_success{agency="dinsos",check="tls.chain"} 0' in samples
    assert 'provisioner_check_success{agency="dinkes",check="https.headers"} 1' in samples
    assert not any('agency="dishub",check="dns.points_to_host"' in s for s in samples)  # skipped
    expiry = START + dt.timedelta(days=3)
    assert f'provisioner_ssl_earliest_cert_expiry{{agency="dinsos"}} {int(expiry.timestamp())}' \
        in samples
    assert 'provisioner_publication_score{agency="distan"} 28' in samples
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    types = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert helps == types == {line.split("{")[0].split()[0] for line in samples}


def test_prometheus_label_escaping() -> None:
    result = agency('a"b\\c', {})
    text = prom.render(sweep_of([result]))
    assert 'provisioner_agency_active{agency="a\\"b\\\\c"} 1' in text


TREND = [SweepPoint(i, f"2026-11-{20 + i:02d}T02:00:00+00:00", 4, a, 25.0 * a, s, 1)
         for i, (a, s) in enumerate([(1, 20.0), (2, 30.0), (2, 32.0)], start=1)]


def test_html_report_in_bahasa_indonesia(sweep: SweepResult) -> None:
    page = html.render(sweep, TREND, RULES, "paserkab.go.id", "id")
    tree = lxml_html.fromstring(page)
    assert tree.get("lang") == "id"
    big = tree.xpath("//div[contains(@class, 'big')]")[0].text_content()
    assert big == "50,0\u00a0%"
    assert "situs perangkat daerah aktif" in page and "2 dari 4 situs" in page
    assert "Tidak aktif" in page and "rantai sertifikat tepercaya" in page
    assert "bukan penilaian kepatuhan Ombudsman RI" in page
    assert len(tree.findall(".//svg")) == 1 and len(tree.findall(".//circle")) == 3
    rows = tree.findall(".//tbody")[0].findall("tr")
    assert len(rows) == 4
    assert "Dinas dinkes &lt;&amp;&gt;" in page  # agency text is escaped
    evidence = rows[-1].find(".//details")  # dinkes, all items published, is listed last
    assert evidence.findtext("summary") == "Bukti"
    assert "persyaratan /layanan/: \u201cpersyaratan <b>\ufffd[31m\u201d" in evidence.text_content()
    assert "Hanya dalam PDF atau gambar" in page and "/files/sop.pdf" in page


def test_html_report_is_self_contained_and_printable(sweep: SweepResult) -> None:
    page = html.render(sweep, TREND[:1], RULES, "paserkab.go.id", "en")
    tree = lxml_html.fromstring(page)
    assert not tree.findall(".//script") and not tree.findall(".//link") \
        and not tree.findall(".//img")
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", page)
    assert "@media print" in page
    assert "Only one sweep so far" in page and "of agency sites are active" in page
    assert "50.0\u00a0%" in page


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "provisioner.prom"
    target.write_text("old\n")
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["provisioner.prom"]


def test_write_atomic_never_replaces_a_device(tmp_path):
    """Renaming a temp file over /dev/null once turned it into a regular file."""
    import os
    import stat

    from provisioner.verify.report import write_atomic

    write_atomic(Path("/dev/null"), "discarded\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    target = tmp_path / "report.txt"
    write_atomic(target, "kept\n")
    assert target.read_text() == "kept\n" and not list(tmp_path.glob(".report.txt.*"))
