"""The publication judgment against the labelled corpus (tests/corpus): 50 agency sites
written fresh, each with what an assessor answers for the eight scored items.

Every site is crawled as the verifier does (home page, then the crawl) through an
in-memory ``Site`` serving the corpus files; every wrong judgment is reported by name.
"""

from __future__ import annotations

import pytest

from provisioner.verify.content import load_rules
from tests.corpus.kit import ITEMS, accuracy, corpus_sites, verdicts

RULES = load_rules()
GOAL = 0.95


@pytest.fixture(scope="module")
def results():
    return verdicts(RULES)


def test_the_corpus_is_large_and_mixed() -> None:
    sites = corpus_sites()
    assert len(sites) >= 40
    labelled = [s.expected for s in sites]
    assert sum(all(e.values()) for e in labelled) < len(sites) / 4  # most partly compliant
    assert sum(not any(e.values()) for e in labelled) >= 5  # news, parked, default, ...
    for item in ITEMS:  # every item both ways
        assert {e[item] for e in labelled} == {True, False}, item


def test_accuracy_over_the_corpus_is_at_least_95_percent(results) -> None:
    figures = accuracy(results)
    wrong = [line for v in results for line in v.wrong()]
    assert figures["overall"] >= GOAL, "\n".join(wrong)
    assert all(figures[item] >= 0.9 for item in ITEMS), (figures, wrong)


def test_warnings_name_the_documents(results) -> None:
    wrong = [line for v in results for line in v.wrong_warnings()]
    labelled = sum(1 for v in results if v.labels.warnings)
    assert labelled >= 5
    assert len(wrong) <= 0.05 * len(results), "\n".join(wrong)


def test_real_content_judgment(results) -> None:
    wrong = [line for v in results for line in v.wrong_content()]
    assert not wrong, "\n".join(wrong)


def test_every_item_found_keeps_a_short_snippet_of_its_page(results) -> None:
    for verdict in results:
        publication = verdict.publication
        for item, evidence in publication.evidence.items():
            assert publication.components[item]
            assert evidence.page in publication.pages
            assert 0 < len(evidence.snippet) <= 160


def test_standards_two_and_three_clicks_deep_are_read(results) -> None:
    by_name = {v.labels.name: v for v in results}
    deep = by_name["bkpsdm-tiga-klik"].publication.evidence["persyaratan"]
    assert deep.page == "/informasi-publik/standar-pelayanan/kenaikan-pangkat.html"
    assert by_name["dinkes-wordpress"].publication.evidence["waktu"].page \
        == "/layanan/penerbitan-sip/"
    assert by_name["dishub-klik-di-sini"].publication.evidence["biaya"].page == "/halaman/17"


def test_robots_txt_is_honoured_and_the_crawl_is_bounded(results) -> None:
    by_name = {v.labels.name: v for v in results}
    assert "/internal/layanan-tdup.html" not in by_name["dispar-robots"].requested
    for verdict in results:
        pages = [p for p in verdict.requested if p not in (
            "/robots.txt", "/sitemap.xml", "/standar-pelayanan.json")]
        assert len(pages) <= RULES.discovery.max_pages


def test_a_complete_site_stops_reading_once_everything_is_found(results) -> None:
    by_name = {v.labels.name: v for v in results}
    requested = by_name["disdukcapil-laravel"].requested
    assert "/sitemap.xml" not in requested and "/standar-pelayanan.json" not in requested
