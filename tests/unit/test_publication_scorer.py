"""The website publication scorer: HTML snippets in, published components and score out.

Pure functions, no servers. The rules come from the shipped provisioner/data/scoring.yml,
so these tests also pin what that file means.
"""

from __future__ import annotations

import json

import pytest
from lxml import etree

from provisioner.errors import InputError
from provisioner.verify.content import (
    flatten_deep,
    RULES_FILE,
    analyse_page,
    load_rules,
    not_content_reason,
    pages_from_data,
    ranked_links,
    publication_checks,
    read_published,
    same_site_path,
    score_publication,
    word_chars,
)
from provisioner.verify.model import Status

RULES = load_rules()
SIX = ("persyaratan", "prosedur", "waktu", "biaya", "produk", "pengaduan")


def found(html: str) -> set[str]:
    """What a page publishes, read as a home page and as any other page (which must agree)."""
    home, other = analyse_page(html, RULES), read_published(html, RULES)
    assert home.found == other.found
    return set(home.found)


def page(body: str, title: str = "Layanan") -> str:
    return f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"


SIX_H2 = page("<main>" + "".join(f"<h2>{h}</h2><p>{c}</p>" for h, c in (
    ("Persyaratan", "KTP dan KK asli"), ("Prosedur", "Datang ke loket"),
    ("Jangka Waktu Penyelesaian", "3 hari kerja"), ("Biaya", "Gratis"),
    ("Produk Pelayanan", "Kartu keluarga"), ("Pengaduan", "Telepon 0543 21170"))) + "</main>")

CASES = [
    ("six h2 headings", SIX_H2, set(SIX)),
    ("data-komponen markers without headings", page("<main>" + "".join(
        f'<section data-komponen="{m}"><p>{text}</p></section>' for m, text in (
            ("persyaratan", "Fotokopi KTP"), ("prosedur", "Pemohon mengisi formulir"),
            ("jangka_waktu", "2 hari kerja"), ("biaya", "Gratis"), ("produk", "Akta"),
            ("pengaduan", "Telepon (0543) 21170"))) + "</main>"), set(SIX)),
    ("a marker over text that does not show its component", page(
        '<main><section data-komponen="biaya"><p>isi komponen biaya</p></section></main>'),
     set()),
    ("variants: waktu penyelesaian, tarif, alur, penanganan pengaduan", page(
        "<h3>Waktu penyelesaian</h3><p>5 hari</p><h3>Tarif</h3><p>Rp 0</p>"
        "<h3>Alur</h3><ol><li>Daftar</li></ol><h3>Penanganan pengaduan</h3>"
        "<p>Lewat surel pengaduan@dinkes.example.go.id</p>"),
     {"waktu", "biaya", "prosedur", "pengaduan"}),
    ("a complaint channel named without its details is not one", page(
        "<h3>Penanganan pengaduan</h3><p>Lewat surel</p>"), set()),
    ("variants: waktu pelayanan, biaya/tarif, mekanisme, jangka waktu layanan", page(
        "<h4>Waktu pelayanan</h4><p>1 hari</p><h4>Biaya / Tarif</h4><p>Tidak dipungut biaya</p>"
        "<h4>Mekanisme</h4><p>Daftar online, lalu ambil antrean</p>"), {"waktu", "biaya", "prosedur"}),
    ("jangka waktu layanan and sistem, mekanisme, dan prosedur", page(
        "<h2>Jangka waktu layanan</h2><p>2 hari</p>"
        "<h2>Sistem, Mekanisme, dan Prosedur</h2><p>Isi formulir di loket</p>"), {"waktu", "prosedur"}),
    ("definition list", page("<dl><dt>Persyaratan</dt><dd>KTP</dd><dt>Biaya</dt><dd>Gratis</dd>"
                             "</dl>"), {"persyaratan", "biaya"}),
    ("table header cells", page("<table><tr><th>Produk layanan</th><td>Akta kelahiran</td></tr>"
                                "<tr><th>Biaya/tarif</th><td>Rp0</td></tr></table>"),
     {"produk", "biaya"}),
    ("table label cells with numbering", page(
        "<table><tr><th>No</th><th>Komponen</th><th>Uraian</th></tr>"
        "<tr><td>1.</td><td>Persyaratan Pelayanan</td><td>Fotokopi KTP</td></tr>"
        "<tr><td>2.</td><td>Sistem, mekanisme dan prosedur</td><td>Loket satu pintu</td></tr>"
        "</table>"), {"persyaratan", "prosedur"}),
    ("strong label at the start of a block", page(
        "<p><strong>Biaya:</strong> Gratis</p><div><b>Produk</b><br>Surat izin</div>"),
     {"biaya", "produk"}),
    ("strong word inside a sentence is not a heading", page(
        "<p>Tidak ada <strong>biaya</strong> tambahan untuk <b>persyaratan</b> apa pun.</p>"),
     set()),
    ("a word in the menu only", page("<nav><ul><li><a href='/biaya'>Biaya</a></li></ul></nav>"
                                     "<main><h1>Beranda</h1><p>Selamat datang.</p></main>"), set()),
    ("a heading in the footer only", page("<main><h1>Beranda</h1><p>Selamat datang di situs "
                                          "kami.</p></main><footer><h4>Biaya</h4>"
                                          "<p>Semua layanan gratis</p></footer>"), set()),
    ("menus by class and role are not content", page(
        "<div class='main-menu'><h3>Persyaratan</h3><p>Lihat halaman</p></div>"
        "<div role='navigation'><h3>Prosedur</h3><p>Lihat halaman</p></div>"
        "<div id='sidebar'><h3>Produk</h3><p>Lihat halaman</p></div>"), set()),
    ("only what is inside <main> counts when there is one", page(
        "<div><h2>Persyaratan</h2><p>KTP</p></div><main><h2>Biaya</h2><p>Gratis</p></main>"),
     {"biaya"}),
    ("a heading with nothing under it", page("<h2>Persyaratan</h2><h2>Prosedur</h2>"
                                             "<p>Datang</p>"), {"prosedur"}),
    ("a dash is not content", page("<h2>Biaya</h2><p>-</p>"), set()),
    ("a same-rank heading ends the component", page(
        "<h2>Persyaratan</h2><h2>Catatan</h2><p>Bawa map</p>"), set()),
    ("a lower-rank heading does not end it", page(
        "<h3>Persyaratan</h3><h4>Untuk WNI</h4><ul><li>KTP</li></ul>"), {"persyaratan"}),
    ("minor labels under a heading are its content", page(
        "<h3>Persyaratan</h3><ul><li><strong>KTP</strong></li></ul>"), {"persyaratan"}),
    ("enumerated headings", page("<h3>1. Persyaratan</h3><p>KTP</p><h3>b. Biaya:</h3>"
                                 "<p>Gratis</p>"), {"persyaratan", "biaya"}),
    ("complaint mechanism is pengaduan, not prosedur", page(
        "<h3>Mekanisme pengaduan</h3><p>Melalui SP4N-LAPOR!</p>"), {"pengaduan"}),
    ("full legal name of the complaints component", page(
        "<h3>Penanganan Pengaduan, Saran, dan Masukan</h3><p>Kotak saran</p>"), {"pengaduan"}),
    ("maklumat and a LAPOR! link in the footer", page(
        "<main><h2>Maklumat Pelayanan</h2><p>Kami sanggup melayani sesuai standar.</p></main>"
        "<footer><a href='https://www.lapor.go.id/'>SP4N-LAPOR!</a></footer>"),
     {"maklumat", "lapor"}),
    ("a look-alike LAPOR host does not count", page(
        "<p><a href='https://lapor.go.id.example.com/'>lapor</a></p>"), set()),
    ("an empty marker does not count", page('<section data-komponen="biaya"> </section>'), set()),
    ("script and style text is ignored", page(
        "<script>var h = '<h2>Biaya</h2>';</script><style>h2{}</style><h2>Produk</h2><p>SIM</p>"),
     {"produk"}),
    ("unclosed paragraphs and list items", page(
        "<h2>Persyaratan</h2><ul><li>KTP<li>KK</ul><h2>Biaya</h2><p>Gratis<p>Lunas"),
     {"persyaratan", "biaya"}),
    ("news heading mentioning a component word", page(
        "<h2>Biaya perjalanan dinas naik tahun ini menurut laporan keuangan daerah terbaru "
        "yang dirilis pada rapat paripurna DPRD kemarin sore</h2><p>Berita lengkap</p>"), set()),
]


@pytest.mark.parametrize("html, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_components_found(html: str, expected: set[str]) -> None:
    assert found(html) == expected


PLEDGE = "Dengan ini kami menyatakan sanggup menyelenggarakan pelayanan sesuai standar."
SCORES = [
    ("everything", {"/": SIX_H2, "/m": page(f"<h2>Maklumat</h2><p>{PLEDGE}</p>"
                                            "<a href='https://www.lapor.go.id'>LAPOR</a>")},
     100.0, "A"),
    ("six components, no maklumat, no link", {"/": SIX_H2}, 84.0, "B"),
    ("one component missing", {"/": SIX_H2.replace("Biaya", "Catatan"),
                               "/m": page(f"<h2>Maklumat</h2><p>{PLEDGE}</p>"
                                          "<a href='https://lapor.go.id'>LAPOR</a>")}, 86.0, "B"),
    ("nothing", {"/": page("<p>Selamat datang</p>")}, 0.0, "E"),
    ("three components", {"/": page("<h2>Persyaratan</h2><p>KTP</p><h2>Biaya</h2><p>Gratis</p>"
                                    "<h2>Produk</h2><p>SIM</p>")}, 42.0, "D"),
]


@pytest.mark.parametrize("pages, score, band", [c[1:] for c in SCORES], ids=[c[0] for c in SCORES])
def test_score_and_band(pages: dict[str, str], score: float, band: str) -> None:
    publication = score_publication({p: analyse_page(h, RULES) for p, h in pages.items()}, RULES)
    assert (publication.score, publication.band) == (score, band)
    assert list(publication.components) == [*SIX, "maklumat", "lapor"]


def test_evidence_names_the_page_and_heading() -> None:
    publication = score_publication({"/layanan/ktp.html": analyse_page(SIX_H2, RULES)}, RULES)
    assert str(publication.evidence["waktu"]) == "/layanan/ktp.html: Jangka Waktu Penyelesaian: 3 hari kerja"
    assert publication.to_dict()["evidence"]["waktu"] == {
        "page": "/layanan/ktp.html", "snippet": "Jangka Waktu Penyelesaian: 3 hari kerja"}
    checks = {c.id: c for c in publication_checks(publication, RULES)}
    assert checks["publication.waktu"].status is Status.PASS
    assert checks["publication.maklumat"].status is Status.FAIL
    assert "1 page(s) read" in checks["publication.maklumat"].detail


def test_rules_file_is_versioned_and_weights_make_100() -> None:
    assert RULES.version >= 1
    assert RULES.ids == (*SIX, "maklumat", "lapor")
    assert sum(c.weight for c in RULES.components) + RULES.lapor_weight == 100
    assert [b.grade for b in RULES.bands] == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize("heading, component", [
    ("Jangka waktu penyelesaian", "waktu"), ("Jangka waktu pelayanan", "waktu"),
    ("Jangka waktu layanan", "waktu"), ("Waktu penyelesaian", "waktu"),
    ("Waktu pelayanan", "waktu"), ("Biaya", "biaya"), ("Tarif", "biaya"),
    ("Biaya/Tarif", "biaya"), ("Prosedur", "prosedur"), ("Alur", "prosedur"),
    ("Mekanisme", "prosedur"), ("Pengaduan", "pengaduan"),
    ("Penanganan pengaduan", "pengaduan"), ("Persyaratan", "persyaratan"),
    ("Syarat-syarat", "persyaratan"), ("Produk layanan", "produk"),
    ("Maklumat Pelayanan", "maklumat"), ("Jam buka", None), ("Berita", None),
])
def test_variants_named_in_service_standard(heading: str, component: str | None) -> None:
    assert RULES.component_for(heading) == component


@pytest.mark.parametrize("html, reason", [
    (page("<h1>Welcome to nginx!</h1><p>If you see this page, the nginx web server is "
          "successfully installed and working. Further configuration is required.</p>",
          title="Welcome to nginx!"), "nginx default page"),
    (page("<h1>Index of /</h1><pre>a.html</pre>", title="Index of /"), "directory listing"),
    (page("<h1>404 Not Found</h1>" + "<p>Halaman yang Anda cari tidak ada di server ini.</p>" * 4,
          title="404 Not Found"), "error page"),
    (page("<p>This domain is parked free of charge. " + "Lorem ipsum dolor sit amet. " * 10,
          title="dinkes.example"), "parked page"),
    (page("<p>Buy this domain today. " + "Lorem ipsum dolor sit amet. " * 10, title="x"),
     "parked page"),
    (page("<p>DOMAIN INI DIJUAL, hubungi kami. " + "Lorem ipsum dolor sit amet. " * 10,
          title="x"), "parked page"),
    (page("<h1>Situs sedang dalam perbaikan</h1>", title="Segera hadir"), "placeholder page"),
    (page("<main><h1>Segera hadir</h1><p>" + "Dinas Kesehatan Kabupaten Paser. " * 5
          + "</p></main>", title="Dinkes"), "placeholder page"),  # the h1 inside main counts
    (page("<p>Halo</p>", title="Dinkes"), "almost empty (4 letters of text)"),
    (SIX_H2, None),
])
def test_not_content(html: str, reason: str | None) -> None:
    assert not_content_reason(analyse_page(html, RULES), RULES) == reason


def test_links_ranked_and_kept_on_site() -> None:
    home = analyse_page(page(
        "<nav><a href='index.html#layanan'>Layanan</a><a href='maklumat.html'>Maklumat Pelayanan"
        "</a></nav><main><a href='layanan/ktp.html'>Pembuatan KTP</a>"
        "<a href='https://other.example/standar-pelayanan'>Standar pelayanan</a>"
        "<a href='standar-pelayanan.pdf'>Standar pelayanan (PDF)</a>"
        "<a href='/berita/1'>Berita</a><a href='mailto:x@y.id'>pengaduan</a>"
        "<a href='/standar-pelayanan/'>Standar Pelayanan</a></main>"), RULES)
    assert [p for _, p, _ in ranked_links(home.links, "https://dinkes.example.go.id/", RULES)] == [
        "/standar-pelayanan/", "/maklumat.html", "/layanan/ktp.html"]


def test_data_file_lists_service_pages_of_this_site_only() -> None:
    document = {"schema": "provisioner/standar-pelayanan/v1",
                "maklumat": {"url": "https://a.example.go.id/maklumat.html"},
                "pengaduan": {"url": "https://a.example.go.id/pengaduan.html"},
                "services": [{"url": "https://a.example.go.id/layanan/x.html"},
                             {"url": "https://evil.example/layanan/y.html"}]}
    base = "https://a.example.go.id/"
    assert pages_from_data(json.dumps(document), base, RULES) == [
        "/layanan/x.html", "/maklumat.html", "/pengaduan.html"]
    assert pages_from_data(json.dumps({**document, "schema": "other/v9"}), base, RULES) is None
    assert pages_from_data("not json", base, RULES) is None


@pytest.mark.parametrize("url, base, path", [
    ("/a/index.html", "https://x.go.id/", "/a/"),
    ("b.html?q=1", "https://x.go.id/a/", "/a/b.html?q=1"),
    ("http://x.go.id/", "https://x.go.id/", None),
    ("https://x.go.id:8443/", "https://x.go.id/", None),
])
def test_same_site_path(url: str, base: str, path: str | None) -> None:
    assert same_site_path(url, base) == path


@pytest.mark.parametrize("text", [
    "", "abc", "KTP dan KK asli, 3 hari kerja.", "snake_case_words", "Rp 0,- (gratis)",
    "Jangka Waktu · 3–5 hari “kerja”\xa0", "héllo wörld ß 123", "日本語のテキスト", "٣ أيام",
    "emoji 🙂 ok", "lone \ud800 surrogate",
])
def test_word_chars_counts_what_isalnum_counts(text: str) -> None:
    assert word_chars(text) == sum(ch.isalnum() for ch in text)


@pytest.mark.parametrize("change", [
    lambda text: text + "\n  - [unclosed",  # not YAML
    lambda text: text.replace("version:", "versi:", 1),  # a missing field
    lambda text: text.replace("pattern: 'welcome to nginx", "pattern: '(welcome to nginx", 1),
])
def test_a_broken_rules_file_is_an_input_error_naming_it(tmp_path, change) -> None:
    broken = tmp_path / "scoring.yml"
    broken.write_text(change(RULES_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_rules(broken)
    (problem,) = caught.value.problems
    assert problem.file == broken and problem.field == "scoring rules"


# =========================================================================== content, not labels
# SERVICE_STANDARD.md "What counts as published", one rule at a time.

RULE_CASES = [
    # waktu: a completion duration; office hours are not one
    ("office hours are no completion time", page(
        "<h3>Waktu Pelayanan</h3><p>Senin-Kamis 08.00-15.30, Jumat 08.00-11.00</p>"), set()),
    ("1 HK", page("<p>Waktu: 1 HK</p>"), {"waktu"}),
    ("15 menit", page("<h3>Jangka waktu</h3><p>15 menit</p>"), {"waktu"}),
    ("selesai saat itu juga", page("<h3>Waktu penyelesaian</h3><p>Selesai saat itu juga</p>"),
     {"waktu"}),
    ("sesuai antrean is no duration", page("<h3>Jangka waktu</h3><p>Sesuai antrean</p>"), set()),
    # biaya: an amount or an explicit free statement
    ("an amount", page("<h3>Biaya</h3><p>Rp 50.000</p>"), {"biaya"}),
    ("nihil", page("<p>Biaya: Nihil</p>"), {"biaya"}),
    ("tidak dipungut biaya", page("<h3>Tarif</h3><p>Tidak dipungut biaya</p>"), {"biaya"}),
    ("Rp 0", page("<h3>Biaya/Tarif</h3><p>Rp 0,-</p>"), {"biaya"}),
    ("'Tidak ada' as the whole answer", page("<table><tr><td>Biaya</td><td>Tidak ada</td></tr>"
                                             "</table>"), {"biaya"}),
    ("a regulation named is no amount", page(
        "<h3>Biaya</h3><p>Sesuai Peraturan Daerah tentang Retribusi</p>"), set()),
    # persyaratan and prosedur: the requirements and the steps themselves
    ("FC KTP, FC KK", page("<p>Persyaratan: FC KTP, FC KK</p>"), {"persyaratan"}),
    ("steps with arrows", page("<p>Prosedur: loket -> verifikasi -> tanda tangan</p>"),
     {"prosedur"}),
    ("a numbered flow in text", page(
        "<h3>Alur</h3><p>1. Pemohon datang 2. Berkas diperiksa 3. Surat terbit</p>"), {"prosedur"}),
    ("see the counter is no requirement", page("<h3>Persyaratan</h3><p>Tanyakan ke petugas</p>"),
     set()),
    # pengaduan: a channel with its details, site-wide; a bare menu link is none
    ("a bare Pengaduan menu link", page(
        "<nav><a href='/pengaduan'>Pengaduan</a></nav><main><p>Selamat datang.</p>"
        "<p><a href='/pengaduan'>Pengaduan</a></p></main>"), set()),
    ("a complaints block in the footer", page(
        "<main><p>Beranda</p></main><footer><h4>Pengaduan</h4><p>WA 0812-5555-1234</p></footer>"),
     {"pengaduan"}),
    ("a complaints widget in the sidebar", page(
        "<aside class='sidebar'><h3>Layanan Pengaduan</h3><p>pengaduan@dinas.go.id</p></aside>"),
     {"pengaduan"}),
    ("a social-media account for complaints", page(
        "<aside><h2>Saluran Pengaduan</h2><p>Instagram @kec.muarakomam</p></aside>"),
     {"pengaduan"}),
    ("a general address footer says nothing about complaints", page(
        "<footer><p>Jl. Sudirman No. 1, Tanah Grogot. Telp. (0543) 21234</p></footer>"), set()),
    ("a complaint sentence with a number", page(
        "<footer><p>Meja pengaduan buka tiap hari kerja, telp. (0543) 27011.</p></footer>"),
     {"pengaduan"}),
    ("a complaint form with fields", page(
        "<main><h1>Form Pengaduan</h1><form><input name='nama'><textarea name='isi'></textarea>"
        "<input type='submit'></form></main>"), {"pengaduan"}),
    ("a search box is no complaint form", page(
        "<main><h1>Pengaduan</h1><form><input name='q'><input type='submit'></form></main>"),
     set()),
    # maklumat: the pledge itself
    ("the pledge text", page(f"<h2>Maklumat Pelayanan</h2><p>{PLEDGE}</p>"), {"maklumat"}),
    ("the pledge without its heading", page(f"<main><h2>Komitmen</h2><p>{PLEDGE}</p></main>"),
     {"maklumat"}),
    ("a teaser is no pledge", page(
        "<h2>Maklumat Pelayanan</h2><p>Janji kami untuk Anda. <a href='/m'>Baca</a></p>"), set()),
    ("the pledge in the footer does not count", page(
        f"<main><p>Beranda</p></main><footer><p>{PLEDGE}</p></footer>"), set()),
    # lapor: a link (an image banner too), or lapor.go.id / SMS 1708 written out
    ("a LAPOR! image banner", page(
        "<aside><a href='https://www.lapor.go.id/'><img src='/lapor.png' alt=''></a></aside>"),
     {"lapor"}),
    ("a link to a page under lapor.go.id", page(
        "<a href='https://lapor.go.id/instansi/pemkab-paser'>Lapor</a>"), {"lapor"}),
    ("SMS 1708 written out", page("<footer><p>Kirim SMS 1708</p></footer>"), {"lapor"}),
    ("www.lapor.go.id written out", page("<p>Kunjungi www.lapor.go.id</p>"), {"lapor"}),
    # layouts
    ("label lines separated by line breaks", page(
        "<p>Persyaratan: FC KTP<br>Waktu: 2 hari kerja<br>Biaya: Gratis<br>"
        "Produk: Surat izin</p>"), {"persyaratan", "waktu", "biaya", "produk"}),
    ("label list items", page(
        "<ul><li><b>Biaya:</b> Gratis</li><li><b>Waktu Penyelesaian:</b> 1 hari</li></ul>"),
     {"biaya", "waktu"}),
    ("an accordion whose panels are collapsed", page(
        "<div class='accordion-item'><h2 class='accordion-header'><button data-bs-target='#c1'>"
        "Biaya</button></h2><div id='c1' class='collapse'><div class='accordion-body'>Gratis"
        "</div></div></div>"), {"biaya"}),
    ("tab panels named by their controls", page(
        "<ul class='nav nav-tabs'><li><button data-bs-toggle='tab' data-bs-target='#t1'>"
        "Jangka Waktu</button></li></ul><div class='tab-content'><div class='tab-pane' id='t1'>"
        "<p>3 hari kerja</p></div></div>"), {"waktu"}),
    ("details and summary", page("<details><summary>Produk</summary><p>Akta</p></details>"),
     {"produk"}),
    ("a heading alone in its wrapper, the text in the next one", page(
        "<div class='w'><div><h3>Persyaratan</h3></div></div><div class='w'><ul><li>KTP</li>"
        "<li>KK</li></ul></div>"), {"persyaratan"}),
    ("a heading naming two components", page(
        "<h2>Waktu dan Biaya</h2><p>3 hari kerja, tanpa biaya.</p>"), {"waktu", "biaya"}),
    ("terms and conditions name no component", page(
        "<h2>Syarat dan Ketentuan</h2><ul><li>Data pribadi dijaga</li><li>Foto KTP</li></ul>"),
     set()),
    ("label lines in a pre block", page(
        "<pre>PERSYARATAN : FC KTP\nWAKTU       : 1 HARI KERJA\nBIAYA       : GRATIS</pre>"),
     {"persyaratan", "waktu", "biaya"}),
    ("an icon image as the label, text under it", page(
        "<p><img src='/i/syarat.png' alt='Persyaratan'></p><ul><li>KTP</li><li>KK</li></ul>"),
     {"persyaratan"}),
    ("cards", page("<div class='card'><div class='card-header'>Tarif</div>"
                   "<div class='card-body'>Rp 15.000</div></div>"), {"biaya"}),
    ("English labels", page(
        "<h2>Requirements</h2><ul><li>ID card</li><li>Tax number</li></ul><h2>Procedure</h2>"
        "<ol><li>Register</li><li>Submit</li></ol><h2>Service Time</h2><p>1 working day</p>"
        "<h2>Fee</h2><p>Free of charge</p><h2>Output</h2><p>Licence</p><h2>Complaints</h2>"
        "<p>Help desk, 1st floor</p><h2>Service Pledge</h2><p>We pledge to serve you.</p>"),
     {"persyaratan", "prosedur", "waktu", "biaya", "produk", "pengaduan", "maklumat"}),
    # words in prose are not a standard
    ("a news paragraph mentioning the words", page(
        "<main><h2>Jembatan Kandilo Dibangun</h2><p>Biaya pembangunan Rp 4,7 miliar; persyaratan "
        "lelang diumumkan, pekerjaan selesai dalam waktu 150 hari.</p></main>"), set()),
    ("a bold word opening a news paragraph", page(
        "<p><strong>Biaya pembangunan</strong> jembatan mencapai Rp 4,7 miliar.</p>"), set()),
    ("a news article under a look-alike heading", page(
        "<h3>Biaya Pembangunan</h3><p>" + "Pemerintah kabupaten menganggarkan dana dari APBD "
        "untuk jembatan ini dan pekerjaan akan diawasi konsultan. " * 4 + "Nilainya Rp 4,7 "
        "miliar.</p>"), set()),
    # only in a PDF or an image: not counted
    ("a heading above a PDF link only", page(
        "<h2>Persyaratan</h2><p><a href='/sp.pdf'>Unduh persyaratan (PDF)</a></p>"), set()),
    ("a heading above an image only", page(
        "<h2>Alur Pelayanan</h2><p><img src='/alur.png' alt='Alur pelayanan'></p>"), set()),
]


@pytest.mark.parametrize("html, expected", [c[1:] for c in RULE_CASES],
                         ids=[c[0] for c in RULE_CASES])
def test_content_not_labels(html: str, expected: set[str]) -> None:
    assert found(html) == expected


def test_standards_only_in_documents_are_named_in_a_warning() -> None:
    home = analyse_page(page(
        "<main><h2>Maklumat Pelayanan</h2><img src='/img/maklumat.jpg'><h2>Standar Pelayanan</h2>"
        "<p><a href='/files/SP-KTP.pdf'>Unduh</a></p><img src='/img/kantor.jpg'></main>"), RULES)
    assert home.documents == ("/img/maklumat.jpg", "/files/SP-KTP.pdf")
    publication = score_publication({"/": home}, RULES)
    assert publication.documents == ("/img/maklumat.jpg", "/files/SP-KTP.pdf")
    warning = next(c for c in publication_checks(publication, RULES)
                   if c.id == "publication.documents")
    assert warning.status is Status.WARN
    assert "/files/SP-KTP.pdf" in warning.detail and "maklumat" in warning.detail
    assert publication.to_dict()["documents"] == ["/img/maklumat.jpg", "/files/SP-KTP.pdf"]


def test_an_image_naming_a_component_with_nothing_readable_is_a_document() -> None:
    home = analyse_page(page("<main><p><img src='/alur.png' alt='Alur Pelayanan'></p></main>"),
                        RULES)
    assert (home.found, home.documents) == ({}, ("/alur.png",))


def test_no_warning_when_everything_is_readable() -> None:
    publication = score_publication({"/": analyse_page(SIX_H2.replace(
        "</main>", f"<h2>Maklumat</h2><p>{PLEDGE}</p><a href='/sp.pdf'>Standar (PDF)</a></main>"),
        RULES)}, RULES)
    assert "publication.documents" not in {c.id for c in publication_checks(publication, RULES)}


def test_evidence_snippets_are_at_most_160_characters() -> None:
    long_list = "".join(f"<li>Fotokopi dokumen pendukung nomor {i}</li>" for i in range(40))
    home = analyse_page(page(f"<h2>Persyaratan</h2><ul>{long_list}</ul>"), RULES)
    assert home.found["persyaratan"].startswith("Persyaratan: Fotokopi dokumen")
    assert len(home.found["persyaratan"]) == 160


# =========================================================================== bounded input

def test_a_224_kb_title_is_cut_before_any_pattern_sees_it() -> None:
    title = "apache " * 32_000  # the default-page rule once took 25 s on this
    home = analyse_page(page("<main><p>" + "Isi halaman. " * 20 + "</p></main>", title=title),
                        RULES)
    assert len(home.title) <= RULES.limits.title_chars
    assert len(home.headline) <= 6 * (RULES.limits.title_chars + 3)
    assert not_content_reason(home, RULES) is None


def test_a_huge_heading_and_a_huge_label_line_name_nothing() -> None:
    assert RULES.component_for("Biaya " * 50_000) is None
    assert found(page("<h2>" + "Persyaratan " * 20_000 + "</h2><p>KTP</p>")) == set()
    assert found(page("<p>" + "Biaya " * 20_000 + ": Gratis</p>")) == set()


def test_5000_nested_elements_around_the_content_do_not_break_the_reading() -> None:
    nested = "<div>" * 5000 + "<h2>Biaya</h2><p>Gratis</p>" + "</div>" * 5000
    home = analyse_page(page("<p>" + "Selamat datang di situs kami. " * 10 + "</p>" + nested
                             + "<p>Sesudahnya</p>"), RULES)
    assert home.text_chars > 100
    assert home.found.keys() == {"biaya"}  # read as a browser shows it (libxml2 stops at 256)


@pytest.mark.parametrize("opening, closing", [
    ("<div>" * 5000, "</div>" * 5000),
    ("<ul><li>" * 3000, "</li></ul>" * 3000),
    ("<span><div>" * 2000, "</div>" * 2000),  # spans never closed
])
def test_a_page_nested_too_deep_is_flattened_below_libxml2s_limit(opening: str, closing: str) -> None:
    flat = flatten_deep(f"<main>{opening}<h2>Biaya</h2><p>Rp 0 &amp; gratis</p>{closing}</main>")
    parser = etree.HTMLParser()
    root = etree.fromstring(flat, parser)
    assert not any("Excessive depth" in e.message for e in parser.error_log)
    assert root.xpath("string(//h2)") == "Biaya"
    assert "Rp 0 & gratis" in root.xpath("string(//main)")


def test_a_page_larger_than_the_limit_is_read_up_to_it() -> None:
    filler = "<p>" + "isi " * 100 + "</p>"
    html = page(filler * (RULES.limits.page_chars // len(filler) + 10)
                + "<h2>Biaya</h2><p>Gratis</p>")
    assert len(html) > RULES.limits.page_chars
    assert found(html) == set()


def test_the_number_of_elements_visited_is_bounded() -> None:
    html = page("<span>x</span>" * (RULES.limits.elements + 10) + "<h2>Biaya</h2><p>Gratis</p>")
    assert found(html) == set()
    assert found(page("<span>x</span>" * 100 + "<h2>Biaya</h2><p>Gratis</p>")) == {"biaya"}


def test_malformed_links_are_skipped() -> None:
    home = analyse_page(page("<a href='http://[lapor'>LAPOR</a><a href='https://[x'>x</a>"
                             "<a href='http://x:99999/'>y</a><a href='/layanan'>Layanan</a>"),
                        RULES)
    assert [p for _, p, _ in ranked_links(home.links, "https://a.go.id/", RULES)] == ["/layanan"]
