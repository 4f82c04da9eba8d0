"""The crawl (verify.crawl) over an in-memory site: depth, page and size budgets, robots.txt,
sitemap.xml, standar-pelayanan.json, redirects and pages that fail. Pure code: the site is
a dict of answers behind the interface of verify.http.Site."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from provisioner.verify.content import analyse_page, load_rules
from provisioner.verify.crawl import read_publication, sitemap_urls
from provisioner.verify.http import Response
from provisioner.verify.model import Status
from provisioner.verify.tls import ProbeFailure

RULES = load_rules()
BASE = "https://dinas.paserkab.go.id/"
COMPLETE = """<main><h2>Persyaratan</h2><ul><li>FC KTP</li><li>FC KK</li></ul>
<h2>Prosedur</h2><ol><li>Daftar di loket</li><li>Verifikasi</li></ol>
<h2>Jangka Waktu</h2><p>3 hari kerja</p><h2>Biaya</h2><p>Gratis</p>
<h2>Produk</h2><p>Surat keterangan</p><h2>Pengaduan</h2><p>Telepon 0543-21170</p>
<h2>Maklumat Pelayanan</h2><p>Dengan ini kami menyatakan sanggup melayani sesuai standar.</p>
<p><a href="https://www.lapor.go.id">LAPOR!</a></p></main>"""
WAKTU_ONLY = "<main><h2>Jangka Waktu</h2><p>3 hari kerja</p></main>"


def html(body: str, title: str = "Dinas") -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


class MemorySite:
    """Answers from a dict: path -> html text, (status, headers, text), or an exception."""

    def __init__(self, answers: dict[str, object]):
        self.answers, self.base_url, self.requested = answers, BASE, []

    async def get(self, path: str) -> Response:
        self.requested.append(path)
        answer = self.answers.get(path, (404, {}, "not found"))
        if isinstance(answer, Exception):
            raise answer
        status, headers, text = answer if isinstance(answer, tuple) else (
            200, {"content-type": "text/html; charset=utf-8"}, answer)
        return Response(status=status, headers=headers, body=text.encode("utf-8"))

    @property
    def pages(self) -> list[str]:
        return [p for p in self.requested
                if p not in ("/robots.txt", "/sitemap.xml", "/standar-pelayanan.json")]


def crawl(answers: dict[str, object], rules=RULES):
    site = MemorySite(answers)
    home = analyse_page(answers["/"], rules)
    publication = asyncio.run(read_publication(site, "/", home, rules))
    return publication, site


def chain(depth: int) -> dict[str, object]:
    """home -> /layanan/1 -> /layanan/2 -> ...; the standard on the last page."""
    answers: dict[str, object] = {"/": html('<a href="/layanan/1">Layanan</a>')}
    for i in range(1, depth):
        answers[f"/layanan/{i}"] = html(f'<main><a href="/layanan/{i + 1}">Layanan</a></main>')
    answers[f"/layanan/{depth}"] = html(WAKTU_ONLY)
    return answers


def test_standards_three_clicks_deep_are_read_four_are_not() -> None:
    assert crawl(chain(3))[0].components["waktu"] is True
    publication, site = crawl(chain(4))
    assert publication.components["waktu"] is False
    assert "/layanan/4" not in site.requested


def test_at_most_25_pages_a_site() -> None:
    links = "".join(f'<a href="/layanan/{i}">Layanan {i}</a>' for i in range(60))
    answers = {"/": html(links), **{f"/layanan/{i}": html("<p>Belum ada isi.</p>")
                                    for i in range(60)}}
    publication, site = crawl(answers)
    assert len(site.pages) == RULES.discovery.max_pages - 1  # the home page is one of them
    assert len(publication.pages) == RULES.discovery.max_pages


def test_the_crawl_stops_once_every_item_is_found() -> None:
    answers = {"/": html('<a href="/standar-pelayanan/">Standar Pelayanan</a>'
                         '<a href="/layanan/lain">Layanan lain</a>'),
               "/standar-pelayanan/": html(COMPLETE)}
    publication, site = crawl(answers)
    assert publication.score == 100.0
    assert site.requested == ["/robots.txt", "/standar-pelayanan/"]


def test_most_promising_links_first_and_klik_di_sini_read_in_context() -> None:
    answers = {"/": html('<a href="/profil">Profil</a><p>Standar pelayanan izin: '
                         '<a href="/halaman/17">klik di sini</a></p>'),
               "/halaman/17": html(WAKTU_ONLY)}
    publication, site = crawl(answers)
    assert site.pages[0] == "/halaman/17"
    assert publication.evidence["waktu"].page == "/halaman/17"


def test_other_sites_documents_and_news_are_not_followed() -> None:
    answers = {"/": html('<a href="https://evil.example/layanan">Layanan</a>'
                         '<a href="/sp.pdf">Standar pelayanan</a><a href="/berita/1">Berita</a>'
                         '<a href="http://[lapor">x</a><a href="/kontak">Hubungi kami</a>')}
    _, site = crawl(answers)
    assert site.pages == ["/kontak"]


def test_robots_txt_is_honoured_for_our_user_agent() -> None:
    robots = "User-agent: *\nDisallow:\n\nUser-agent: provisioner-verify\nDisallow: /layanan/\n"
    answers = {**chain(1), "/robots.txt": (200, {"content-type": "text/plain"}, robots)}
    publication, site = crawl(answers)
    assert "/layanan/1" not in site.requested
    assert publication.components["waktu"] is False
    assert any("robots.txt disallows /layanan/1" in note for note in publication.notes)


def test_a_page_that_fails_is_skipped_not_the_end_of_the_crawl() -> None:
    answers = {"/": html('<a href="/layanan/a">Layanan A</a><a href="/layanan/b">Layanan B</a>'),
               "/layanan/a": ProbeFailure(Status.ERROR, "GET /layanan/a: no answer within 5s"),
               "/layanan/b": html(WAKTU_ONLY)}
    publication, _ = crawl(answers)
    assert publication.components["waktu"] is True
    assert any("no answer" in note for note in publication.notes)


def test_the_crawl_gives_up_after_three_failures() -> None:
    links = "".join(f'<a href="/layanan/{i}">Layanan {i}</a>' for i in range(10))
    failure = ProbeFailure(Status.ERROR, "connection reset")
    answers = {"/": html(links), **{f"/layanan/{i}": failure for i in range(10)}}
    _, site = crawl(answers)
    assert len(site.pages) == RULES.discovery.max_failed_pages


def test_redirects_within_the_site_are_followed() -> None:
    answers = {"/": html('<a href="/layanan">Layanan</a>'),
               "/layanan": (301, {"location": "/layanan/"}, ""),
               "/layanan/": html(WAKTU_ONLY)}
    publication, _ = crawl(answers)
    assert publication.evidence["waktu"].page == "/layanan/"
    away = {"/": html('<a href="/layanan">Layanan</a>'),
            "/layanan": (302, {"location": "https://elsewhere.example/layanan/"}, "")}
    assert crawl(away)[1].pages == ["/layanan"]


def test_the_total_size_read_is_bounded() -> None:
    rules = dataclasses.replace(RULES, discovery=dataclasses.replace(
        RULES.discovery, max_total_chars=50_000))
    links = "".join(f'<a href="/layanan/{i}">Layanan {i}</a>' for i in range(20))
    big = html("<p>" + "Isi halaman panjang. " * 2000 + "</p>")
    answers = {"/": html(links), **{f"/layanan/{i}": big for i in range(20)}}
    _, site = crawl(answers, rules)
    assert len(site.pages) == 2  # 42,000 characters each: the second passes the bound


def test_pages_that_are_not_html_are_not_read() -> None:
    answers = {"/": html('<a href="/layanan/unduh">Layanan</a>'),
               "/layanan/unduh": (200, {"content-type": "application/pdf"},
                                  "<h2>Jangka Waktu</h2><p>3 hari kerja</p>")}
    assert crawl(answers)[0].components["waktu"] is False


def test_sitemap_pages_are_read_when_links_found_nothing() -> None:
    sitemap = ("<?xml version='1.0' encoding='UTF-8'?><urlset xmlns='http://www.sitemaps.org/"
               "schemas/sitemap/0.9'><url><loc>https://evil.example/layanan/x</loc></url>"
               f"<url><loc>{BASE}layanan/izin</loc></url></urlset>")
    answers = {"/": html("<p>Menu dibuat oleh JavaScript.</p>"),
               "/sitemap.xml": (200, {"content-type": "application/xml"}, sitemap),
               "/layanan/izin": html(WAKTU_ONLY)}
    publication, site = crawl(answers)
    assert publication.evidence["waktu"].page == "/layanan/izin"
    assert "/layanan/x" not in site.requested


def test_sitemap_parsing_is_bounded_and_safe() -> None:
    locs = "".join(f"<url><loc>{BASE}layanan/{i}</loc></url>" for i in range(100))
    assert len(sitemap_urls(f"<urlset>{locs}</urlset>", 10)) == 10
    laughs = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">'
              ']><urlset><url><loc>https://x/&c;</loc></url></urlset>')
    assert all(len(u) < 100 for u in sitemap_urls(laughs, 10))
    external = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                "<urlset><url><loc>&e;</loc></url></urlset>")
    assert all("root:" not in u for u in sitemap_urls(external, 10))
    assert sitemap_urls("<urlset><url><loc>broken", 10) == []
    assert sitemap_urls("not xml at all", 10) == []


def test_a_100000_deep_json_file_is_ignored_with_a_note() -> None:
    deep = '{"schema": "provisioner/standar-pelayanan/v1", "services": ' + "[" * 100_000 \
        + "]" * 100_000 + "}"
    answers = {"/": html("<p>Beranda</p>"),
               "/standar-pelayanan.json": (200, {"content-type": "application/json"}, deep)}
    publication, site = crawl(answers)
    assert "/standar-pelayanan.json" in site.requested
    assert any("standar-pelayanan.json: not read" in note for note in publication.notes)
    assert publication.to_dict()["notes"] == list(publication.notes)


def test_the_data_file_names_pages_to_read() -> None:
    document = {"schema": "provisioner/standar-pelayanan/v1",
                "services": [{"url": f"{BASE}layanan/x.html"}]}
    answers = {"/": html("<p>Beranda</p>"),
               "/standar-pelayanan.json": (200, {"content-type": "application/json"},
                                           json.dumps(document)),
               "/layanan/x.html": html(WAKTU_ONLY)}
    assert crawl(answers)[0].evidence["waktu"].page == "/layanan/x.html"


def test_a_page_for_items_already_found_is_not_read() -> None:
    pledge = "Dengan ini kami menyatakan sanggup melayani sesuai standar."
    answers = {"/": html(f"<main><h2>Maklumat Pelayanan</h2><p>{pledge}</p>"
                         '<a href="/maklumat.html">Maklumat Pelayanan</a>'
                         '<a href="/layanan/penanganan-pengaduan.html">Penanganan Pengaduan</a>'
                         "<h2>Pengaduan</h2><p>Telepon 0543-21170, "
                         '<a href="https://www.lapor.go.id">LAPOR!</a></p></main>'),
               "/layanan/penanganan-pengaduan.html": html(WAKTU_ONLY)}
    publication, site = crawl(answers)
    assert "/maklumat.html" not in site.requested  # the pledge was read on the home page
    assert publication.evidence["waktu"].page == "/layanan/penanganan-pengaduan.html"
