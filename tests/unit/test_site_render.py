"""The starter site and vhost renderer (provisioner/site/render.py): pure, table-driven."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.errors import RenderError
from provisioner.registry.load import load_inventory
from provisioner.registry.models import (
    DELIVERY_COMPONENTS,
    MANAGEMENT_COMPONENTS,
    ComplaintChannel,
    Head,
)
from provisioner.site import render as site

REPO = Path(__file__).resolve().parents[2]
STATE = Path("/nonexistent/provisioner-state")  # loading only resolves paths under it
INVENTORY = load_inventory(REPO / "inventory", STATE)
AGENCIES = list(INVENTORY.agencies.values())
SERVICES = [(a, s) for a in AGENCIES for s in a.services]
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(1)>&amp;"
# The headings the brief and PermenPANRB 15/2014 name (independent of site.py's table).
HEADINGS = {
    "persyaratan": "Persyaratan",
    "prosedur": "Sistem, Mekanisme, dan Prosedur",
    "jangka_waktu": "Jangka Waktu Penyelesaian",
    "biaya": "Biaya/Tarif",
    "produk": "Produk Pelayanan",
    "pengaduan": "Penanganan Pengaduan, Saran, dan Masukan",
    "dasar_hukum": "Dasar Hukum",
    "sarana": "Sarana, Prasarana, dan/atau Fasilitas",
    "kompetensi": "Kompetensi Pelaksana",
    "pengawasan": "Pengawasan Internal",
    "jumlah_pelaksana": "Jumlah Pelaksana",
    "jaminan_pelayanan": "Jaminan Pelayanan",
    "jaminan_keamanan": "Jaminan Keamanan dan Keselamatan Pelayanan",
    "evaluasi_kinerja": "Evaluasi Kinerja Pelaksana",
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclasses.dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""


class Page(HTMLParser):
    """A flat list of elements, each with the text of all its descendants."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop().tag == tag:
                break

    def handle_data(self, data):
        for element in self.open:
            element.text += data

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.elements if (tag is None or e.tag == tag)
                and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def text_of(self, element: Element) -> str:
        return " ".join(element.text.split())


def pages_of(files: dict[str, bytes]) -> dict[str, Page]:
    return {path: Page(data.decode()) for path, data in files.items() if path.endswith(".html")}


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, bytes]]:
    return {a.slug: site.render_site(a) for a in AGENCIES}


# --------------------------------------------------------------------------- every agency

@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_every_sample_agency_renders_its_pages_data_and_manifest(agency, rendered):
    files = rendered[agency.slug]
    expected = {"index.html", "maklumat.html", "pengaduan.html", "404.html", site.DATA_PATH,
                site.MANIFEST_PATH, *site.STATIC_ASSETS,
                *(f"layanan/{s.slug}.html" for s in agency.services)}
    assert set(files) == expected
    manifest = site.parse_manifest(files[site.MANIFEST_PATH])
    assert manifest == {path: site.sha256_hex(data) for path, data in files.items()
                        if path != site.MANIFEST_PATH}


@pytest.mark.parametrize("agency", AGENCIES[:3], ids=lambda a: a.slug)
def test_rendering_is_deterministic(agency, rendered):
    assert site.render_site(agency) == rendered[agency.slug]


@pytest.mark.parametrize(("agency", "service"), SERVICES,
                         ids=lambda x: getattr(x, "slug", None))
def test_service_page_shows_every_delivery_component_under_its_heading(agency, service, rendered):
    page = Page(rendered[agency.slug][f"layanan/{service.slug}.html"].decode())
    for key in DELIVERY_COMPONENTS + MANAGEMENT_COMPONENTS:
        sections = page.find("section", data_komponen=key)
        published = service.components.get(key) or service.management.get(key)
        if not published:
            assert sections == [], f"{key} shown but not published"
            continue
        assert len(sections) == 1, key
        heading = next(e for e in page.elements[page.elements.index(sections[0]):]
                       if e.tag in ("h2", "h3"))
        assert page.text_of(heading) == HEADINGS[key]
        for item in published:
            assert squash(item) in page.text_of(sections[0])


@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_json_matches_the_registry(agency, rendered):
    document = json.loads(rendered[agency.slug][site.DATA_PATH])
    assert document["schema"] == "provisioner/standar-pelayanan/v1"
    assert (document["slug"], document["name"], document["url"]) == (
        agency.slug, agency.name, f"https://{agency.fqdn}/")
    assert (document["address"], document["phone"], document["email"]) == (
        agency.address, agency.phone, agency.email)
    assert document["opening_hours"] == list(agency.opening_hours)
    assert document["head"] == {"name": agency.head.name, "title": agency.head.title}
    assert document["sample"] is agency.sample
    assert document["maklumat"]["text"] == agency.maklumat
    assert document["pengaduan"]["lapor"] == {"url": "https://www.lapor.go.id", "sms": "1708"}
    assert [c["name"] for c in document["pengaduan"]["channels"]] == [
        c.name for c in agency.complaint_channels if c.name != "SP4N-LAPOR!"]
    assert [s["slug"] for s in document["services"]] == [s.slug for s in agency.services]
    for entry, service in zip(document["services"], agency.services):
        assert entry["name"] == service.name
        assert entry["url"] == f"https://{agency.fqdn}/layanan/{service.slug}.html"
        expected = {**{k: list(v) for k, v in service.components.items()},
                    **{k: list(v) for k, v in service.management.items()}}
        assert entry["komponen"] == expected
        assert list(entry["komponen"])[:6] == list(DELIVERY_COMPONENTS)


@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_every_page_is_accessible_html_in_indonesian(agency, rendered):
    for path, page in pages_of(rendered[agency.slug]).items():
        assert len(page.find("h1")) == 1, path
        assert page.find("html")[0].attrs.get("lang") == "id", path
        for landmark in ("header", "nav", "main", "footer"):
            assert page.find(landmark), f"{path}: no <{landmark}>"
        skip = page.elements[page.elements.index(page.find("body")[0]) + 1]
        assert skip.tag == "a" and skip.attrs["href"] == "#konten", path
        assert page.find("main", id="konten"), path
        assert all(img.attrs.get("alt") for img in page.find("img")), path


@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_home_page_with_its_css_is_under_50_kb(agency, rendered):
    files = rendered[agency.slug]
    assert len(files["index.html"]) + len(files["assets/situs.css"]) < 50 * 1024


@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_no_page_loads_an_external_resource(agency, rendered):
    for path, page in pages_of(rendered[agency.slug]).items():
        for element in page.elements:
            for attr in ("src", "href", "srcset", "data", "action"):
                value = element.attrs.get(attr) or ""
                if element.tag == "a" and attr == "href":
                    continue  # plain links (lapor.go.id, mailto:) are allowed
                assert not re.match(r"^([a-z][a-z0-9+.-]*:|//)", value, re.I), \
                    f"{path}: <{element.tag} {attr}={value!r}>"
    css = rendered[agency.slug]["assets/situs.css"].decode()
    assert "url(" not in css and "@import" not in css


@pytest.mark.parametrize("agency", AGENCIES, ids=lambda a: a.slug)
def test_home_page_links_every_service_maklumat_pengaduan_and_json(agency, rendered):
    page = Page(rendered[agency.slug]["index.html"].decode())
    links = {a.attrs.get("href") for a in page.find("a")}
    assert {f"layanan/{s.slug}.html" for s in agency.services} <= links
    assert {"maklumat.html", "pengaduan.html", site.DATA_PATH} <= links
    assert page.find("link", rel="alternate", type="application/json", href=site.DATA_PATH)
    assert page.find("a", href="https://www.lapor.go.id")
    assert agency.name in page.text_of(page.find("h1")[0])
    assert page.find("img", src="assets/logo.svg")


@pytest.mark.parametrize("agency", AGENCIES[:4], ids=lambda a: a.slug)
def test_maklumat_and_pengaduan_pages_carry_their_content(agency, rendered):
    maklumat = Page(rendered[agency.slug]["maklumat.html"].decode())
    assert squash(agency.maklumat) in maklumat.text_of(maklumat.find("section", data_bagian="maklumat")[0])
    pengaduan = Page(rendered[agency.slug]["pengaduan.html"].decode())
    lapor = pengaduan.text_of(pengaduan.find("section", data_bagian="sp4n-lapor")[0])
    assert "1708" in lapor and pengaduan.find("a", href="https://www.lapor.go.id")
    own = pengaduan.text_of(pengaduan.find("section", data_bagian="saluran-pengaduan")[0])
    for channel in site.own_complaint_channels(agency):
        assert squash(channel.contact) in own


@pytest.mark.parametrize("sample", [True, False])
def test_sample_content_is_marked_as_example_until_replaced(sample):
    agency = dataclasses.replace(AGENCIES[0], sample=sample)
    for path, page in pages_of(site.render_site(agency)).items():
        assert bool(page.find("div", **{"class": "contoh"})) is sample, path


# --------------------------------------------------------------------------- hostile text

def _hostile_service(service, key):
    if key in DELIVERY_COMPONENTS:
        return dataclasses.replace(service, components={**service.components, key: (HOSTILE, "x")})
    return dataclasses.replace(service, management={**service.management, key: (HOSTILE,)})


TEXT_FIELDS = {
    "name": lambda a: dataclasses.replace(a, name=HOSTILE),
    "short_name": lambda a: dataclasses.replace(a, short_name=HOSTILE),
    "description": lambda a: dataclasses.replace(a, description=HOSTILE),
    "address": lambda a: dataclasses.replace(a, address=HOSTILE),
    "phone": lambda a: dataclasses.replace(a, phone=HOSTILE),
    "email": lambda a: dataclasses.replace(a, email=HOSTILE),
    "opening_hours": lambda a: dataclasses.replace(a, opening_hours=(HOSTILE,)),
    "head.name": lambda a: dataclasses.replace(a, head=Head(HOSTILE, "Kepala")),
    "head.title": lambda a: dataclasses.replace(a, head=Head("Nama", HOSTILE)),
    "maklumat": lambda a: dataclasses.replace(a, maklumat=HOSTILE),
    "channel.name": lambda a: dataclasses.replace(
        a, complaint_channels=(ComplaintChannel(HOSTILE, "kontak"),)),
    "channel.contact": lambda a: dataclasses.replace(
        a, complaint_channels=(ComplaintChannel("Saluran", HOSTILE),)),
    "service.name": lambda a: dataclasses.replace(
        a, services=(dataclasses.replace(a.services[0], name=HOSTILE),)),
    "service.description": lambda a: dataclasses.replace(
        a, services=(dataclasses.replace(a.services[0], description=HOSTILE),)),
    **{f"service.{key}": (lambda a, key=key: dataclasses.replace(
        a, services=(_hostile_service(a.services[0], key),)))
       for key in DELIVERY_COMPONENTS + MANAGEMENT_COMPONENTS},
}


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_hostile_text_is_escaped_in_every_page(field):
    agency = TEXT_FIELDS[field](AGENCIES[0])
    pages = pages_of(site.render_site(agency))
    shown = False
    for path, page in pages.items():
        assert not page.find("script"), f"{path}: a <script> element got through"
        injected = [e for e in page.elements
                    if any(k.startswith("on") for k in e.attrs) or e.attrs.get("src") == "x"]
        assert not injected, f"{path}: an injected attribute got through"
        shown = shown or HOSTILE in page.text_of(page.find("html")[0]) or any(
            HOSTILE in (v or "") for e in page.elements for v in e.attrs.values())
    assert shown, f"{field}: the text is not shown anywhere"


def test_channel_url_other_than_http_never_becomes_a_link():
    agency = dataclasses.replace(AGENCIES[0], complaint_channels=(
        ComplaintChannel("Saluran", "kontak", "javascript:alert(1)"),))
    files = site.render_site(agency)
    assert b"javascript:" not in files["pengaduan.html"]
    assert json.loads(files[site.DATA_PATH])["pengaduan"]["channels"][0]["url"] is None


@pytest.mark.parametrize("slug", ["../../etc/passwd", "a/b", "Layanan", "x y", ""])
def test_a_service_slug_that_is_not_a_safe_file_name_is_refused(slug):
    agency = AGENCIES[0]
    agency = dataclasses.replace(
        agency, services=(dataclasses.replace(agency.services[0], slug=slug),))
    with pytest.raises(RenderError):
        site.render_site(agency)


# --------------------------------------------------------------------------- vhost

HOST = INVENTORY.hosts["web1"]
SETTINGS = INVENTORY.settings
AGENCY = INVENTORY.agencies["dinkes"]


def test_vhost_before_the_certificate_serves_the_site_over_http():
    conf = site.render_vhost(AGENCY, HOST, SETTINGS, tls_ready=False).decode()
    assert f"listen {HOST.public_ipv4}:80;" in conf
    assert ":443" not in conf and "return 301" not in conf and "Strict-Transport" not in conf
    assert f"root {HOST.web_root}/dinkes;" in conf
    assert f"root {HOST.acme_webroot};" in conf
    assert f"server_name {AGENCY.fqdn};" in conf


def test_vhost_with_the_certificate_redirects_http_and_serves_https():
    conf = site.render_vhost(AGENCY, HOST, SETTINGS, tls_ready=True).decode()
    http, https = conf.split("\nserver {")[1:]
    assert "location ^~ /.well-known/acme-challenge/" in http
    assert f"return 301 https://{AGENCY.fqdn}$request_uri;" in http
    assert f"listen {HOST.public_ipv4}:443 ssl http2;" in https
    assert f"ssl_certificate {HOST.tls_dir}/dinkes/fullchain.pem;" in https
    assert f"ssl_certificate_key {HOST.tls_dir}/dinkes/privkey.pem;" in https
    for line in ("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_prefer_server_ciphers off;",
                 'Strict-Transport-Security "max-age=63072000"', "X-Content-Type-Options",
                 "Referrer-Policy", "X-Frame-Options", "frame-ancestors 'none'",
                 "default-src 'self'", "server_tokens off;",
                 f"access_log {HOST.log_dir}/dinkes.access.log;",
                 f"error_log {HOST.log_dir}/dinkes.error.log;"):
        assert line in https, line


def test_vhost_listens_on_ipv6_when_the_host_has_it():
    host = dataclasses.replace(HOST, public_ipv6="2001:db8::20")
    conf = site.render_vhost(AGENCY, host, SETTINGS, tls_ready=True).decode()
    assert "listen [2001:db8::20]:80;" in conf and "listen [2001:db8::20]:443 ssl http2;" in conf


def test_wildcard_mode_uses_the_zone_certificate():
    settings = dataclasses.replace(SETTINGS, tls_mode="dns-01-wildcard")
    paths = site.cert_paths(AGENCY, HOST, settings)
    assert paths.fullchain == HOST.tls_dir / f"wildcard.{SETTINGS.zone}" / "fullchain.pem"
    conf = site.render_vhost(AGENCY, HOST, settings, tls_ready=True).decode()
    assert f"ssl_certificate_key {paths.key};" in conf


def test_computed_host_paths():
    assert site.site_dir(AGENCY, HOST) == HOST.web_root / "dinkes"
    assert site.vhost_path(AGENCY, HOST) == HOST.nginx_sites_dir / "dinkes.conf"
    assert site.acme_challenge_dir(HOST) == HOST.acme_webroot / ".well-known/acme-challenge"


BAD_PATHS = {"with space": "/var/www x", "with ;": "/var/www;", "with {": "/var/{www}",
             "with quote": "/var/'www", "relative": "var/www", "with ..": "/var/../etc",
             "with $": "/var/$uri", "with newline": "/var/www\n"}

HOSTILE_VHOST_INPUTS = {
    "fqdn with ;": lambda a, h, s: (dataclasses.replace(a, fqdn="x.go.id; include /etc/*"), h, s),
    "fqdn with newline": lambda a, h, s: (dataclasses.replace(a, fqdn="x.go.id\n}"), h, s),
    "fqdn with space": lambda a, h, s: (dataclasses.replace(a, fqdn="x.go.id evil.id"), h, s),
    "fqdn with $": lambda a, h, s: (dataclasses.replace(a, fqdn="$host"), h, s),
    "slug with path": lambda a, h, s: (dataclasses.replace(a, slug="../etc"), h, s),
    "slug with brace": lambda a, h, s: (dataclasses.replace(a, slug="a}b"), h, s),
    **{f"{field} {label}": (lambda a, h, s, field=field, bad=bad:
                            (a, dataclasses.replace(h, **{field: Path(bad)}), s))
       for field in ("web_root", "acme_webroot", "tls_dir", "log_dir")
       for label, bad in BAD_PATHS.items()},
    "ipv4 with extra": lambda a, h, s: (a, dataclasses.replace(
        h, public_ipv4="127.0.0.1:80 default_server"), s),
    "ipv4 is a name": lambda a, h, s: (a, dataclasses.replace(h, public_ipv4="evil.example"), s),
    "ipv6 with bracket": lambda a, h, s: (a, dataclasses.replace(h, public_ipv6="::1]:80;"), s),
    "wildcard zone": lambda a, h, s: (a, h, dataclasses.replace(
        s, tls_mode="dns-01-wildcard", zone="go.id;x")),
}


@pytest.mark.parametrize("case", HOSTILE_VHOST_INPUTS)
def test_hostile_hostnames_and_paths_are_refused_by_the_vhost_renderer(case):
    agency, host, settings = HOSTILE_VHOST_INPUTS[case](AGENCY, HOST, SETTINGS)
    with pytest.raises(RenderError):
        site.render_vhost(agency, host, settings, tls_ready=True)


@pytest.mark.parametrize("bad", BAD_PATHS.values(), ids=BAD_PATHS)
def test_a_hostile_sites_dir_is_refused_for_the_vhost_file(bad):
    with pytest.raises(RenderError):
        site.vhost_path(AGENCY, dataclasses.replace(HOST, nginx_sites_dir=Path(bad)))


# --------------------------------------------------------------------------- plan

def digest(text: str) -> str:
    return site.sha256_hex(text.encode())


@pytest.mark.parametrize(
    ("case", "new", "deployed", "on_host", "action"),
    [
        # case                                         new   deployed  on host -> action
        ("first deploy, nothing there",                 "v1", None,     None,    "create"),
        ("first deploy, same file there",               "v1", None,     "v1",    "unchanged"),
        ("first deploy, agency's own file there",       "v1", None,     "own",   "keep-edited"),
        ("re-deploy, nothing changed",                  "v1", "v1",     "v1",    "unchanged"),
        ("re-deploy, new content, host unedited",       "v2", "v1",     "v1",    "update"),
        ("re-deploy, new content, agency edited",       "v2", "v1",     "edit",  "keep-edited"),
        ("re-deploy, agency edit equals new content",   "v2", "v1",     "v2",    "unchanged"),
        ("re-deploy, same content, agency edited",      "v1", "v1",     "edit",  "keep-edited"),
        ("re-deploy, agency deleted the page",          "v1", "v1",     None,    "create"),
        ("no longer generated, unedited",               None, "v1",     "v1",    "remove"),
        ("no longer generated, agency edited",          None, "v1",     "edit",  "keep-edited"),
    ],
)
def test_plan_site_files(case, new, deployed, on_host, action):
    path = "layanan/x.html"
    rendered = {path: new.encode()} if new else {}
    manifest = {path: digest(deployed)} if deployed else None
    current = {path: digest(on_host)} if on_host else {}
    changes = site.plan_site_files(rendered, manifest, current)
    assert [(c.path, c.action) for c in changes] == [(path, action)], case


def test_plan_leaves_out_files_that_are_gone_everywhere():
    assert site.plan_site_files({}, {"old.html": "a" * 64}, {}) == []


def test_plan_ignores_files_we_never_generated_and_always_refreshes_the_manifest():
    rendered = {site.MANIFEST_PATH: b"new manifest", "index.html": b"x"}
    current = {site.MANIFEST_PATH: "c" * 64, "index.html": site.sha256_hex(b"x"),
               "foto.jpg": "b" * 64}
    changes = site.plan_site_files(rendered, {"index.html": "a" * 64}, current)
    assert [(c.path, c.action) for c in changes] == [
        (site.MANIFEST_PATH, "update"), ("index.html", "unchanged")]


def test_re_deploying_the_same_render_changes_nothing():
    files = site.render_site(AGENCY)
    manifest = site.parse_manifest(files[site.MANIFEST_PATH])
    current = {path: site.sha256_hex(data) for path, data in files.items()}
    assert {c.action for c in site.plan_site_files(files, manifest, current)} == {"unchanged"}


@pytest.mark.parametrize("data", [b"", b"[]", b'{"files": {}}', b'{"schema": "x", "files": {}}',
                                  b'{"schema": "provisioner/site-manifest/v1", "files": {"a": 1}}'])
def test_a_file_that_is_not_a_manifest_is_refused(data):
    with pytest.raises(RenderError):
        site.parse_manifest(data)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", ""])
def test_write_files_stays_inside_the_folder(tmp_path, rel):
    with pytest.raises(RenderError):
        site.write_files({rel: b"x"}, tmp_path)


def test_write_files_writes_the_tree(tmp_path):
    files = site.render_site(AGENCY)
    site.write_files(files, tmp_path)
    for rel, data in files.items():
        assert (tmp_path / rel).read_bytes() == data


# --------------------------------------------------------------------------- CLI

def test_cli_render_writes_site_and_vhost_and_lists_them_as_json(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["--inventory", str(REPO / "inventory"), "--state-dir",
                                      str(STATE), "render", "dinkes", "-o", str(out),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    paths = {f["path"] for f in listed["files"]}
    assert {"site/index.html", "nginx/dinkes.conf"} <= paths
    for entry in listed["files"]:
        data = (out / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == site.sha256_hex(data)


def test_cli_render_of_an_unknown_agency_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["--inventory", str(REPO / "inventory"), "--state-dir",
                                      str(STATE), "render", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown agency nope" in result.output


# --------------------------------------------------------------------------- render -o in a shared folder
#
# ``render -o /tmp/dinkes`` as root: another local user (here uid 65534) may have planted
# symlinks or the folder itself there first.

OTHER_USER = 65534


def _render(out: Path):
    return CliRunner().invoke(app, ["--inventory", str(REPO / "inventory"), "--state-dir",
                                    str(STATE), "render", "dinkes", "-o", str(out)])


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "passwd").write_bytes(b"root:x:0:0\n")
    return victim


def test_render_replaces_a_planted_file_symlink_instead_of_following_it(tmp_path):
    out, victim = tmp_path / "out", _victim(tmp_path)
    (out / "site").mkdir(parents=True)
    (out / "site" / "index.html").symlink_to(victim / "passwd")

    result = _render(out)

    assert result.exit_code == 0, result.output
    assert (victim / "passwd").read_bytes() == b"root:x:0:0\n"
    assert not (out / "site" / "index.html").is_symlink()
    assert b"<html" in (out / "site" / "index.html").read_bytes()


def test_render_refuses_a_planted_folder_symlink_in_one_line(tmp_path):
    out, victim = tmp_path / "out", _victim(tmp_path)
    out.mkdir()
    (out / "nginx").symlink_to(victim)

    result = _render(out)

    assert result.exit_code == 2
    assert "symlink" in result.output and len(result.output.strip().splitlines()) <= 2
    assert sorted(p.name for p in victim.iterdir()) == ["passwd"]


def test_render_refuses_a_folder_that_belongs_to_another_user(tmp_path):
    out = tmp_path / "dinkes"
    out.mkdir()
    os.chown(out, OTHER_USER, OTHER_USER)

    result = _render(out)

    assert result.exit_code == 2
    assert f"belongs to another user (uid {OTHER_USER})" in result.output
    assert list(out.iterdir()) == []


def test_render_refuses_an_output_folder_that_is_a_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dinkes").symlink_to(tmp_path / "elsewhere")

    assert _render(tmp_path / "dinkes").exit_code == 2
    assert list((tmp_path / "elsewhere").iterdir()) == []
