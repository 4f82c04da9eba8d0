"""`provisioner verify` against real sites on the lab, one in every state.

The sites are set up directly, not through onboarding: signed DNS updates with the
lab's TSIG key, vhost and site files written into the lab hosts' folders and an nginx
reload, certificates from a throwaway CA made here (passed with --ca). A second,
tiny BIND stands in for ns2 in one inventory, serving the zone without one agency's
record: the deterministic way to have a name missing at ns2 only. A "black hole"
(a socket that accepts and never answers) stands for a server that cannot be probed.
Everything is removed again at the end.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from provisioner.dns.tsig import load_tsig_key
from provisioner.lab.loopback import add_loopback, loopback_addresses, remove_loopback
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Inventory
from provisioner.site import render as site

from ..certkit import cert_pem, key_pem, new_ca, new_leaf
from .conftest import SAMPLE_INVENTORY, CliResult, TestLab, make_test_inventory, run_cli

pytestmark = pytest.mark.integration

NGINX_DEFAULT_PAGE = Path("/usr/share/nginx/html/index.html")
SECURITY_HEADERS = """
    add_header Strict-Transport-Security "max-age=31536000" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "no-referrer" always;
    add_header Content-Security-Policy "default-src 'self'; frame-ancestors 'none'" always;
"""

NAV = ("<nav><ul><li><a href='/'>Beranda</a></li><li><a href='/biaya'>Biaya</a></li>"
       "<li><a href='/persyaratan'>Persyaratan</a></li></ul></nav>")

# A site not built from our templates: other heading variants, no data-komponen markers.
EXTERNAL_HTML = f"""<!DOCTYPE html><html lang="id"><head><meta charset="utf-8">
<title>Standar Pelayanan Izin Usaha | DPMPTSP</title></head><body>
<header><h1 class="logo">DPMPTSP Kabupaten Paser</h1>{NAV}</header>
<div id="content"><article>
<h2>Standar Pelayanan Izin Usaha Mikro</h2>
<table class="table">
<tr><th>No</th><th>Komponen</th><th>Uraian</th></tr>
<tr><td>1.</td><td>Syarat-syarat</td><td>Fotokopi KTP dan NPWP pemohon</td></tr>
<tr><td>2.</td><td>Alur pelayanan</td><td>Pemohon mengisi formulir daring, petugas memverifikasi</td></tr>
</table>
<p><strong>Waktu penyelesaian:</strong> 3 (tiga) hari kerja</p>
<dl><dt>Tarif</dt><dd>Tidak dipungut biaya (Rp 0)</dd>
<dt>Hasil pelayanan</dt><dd>Nomor Induk Berusaha (NIB)</dd></dl>
<h3>Penanganan Pengaduan, Saran, dan Masukan</h3>
<p>Kotak saran di loket, surel pengaduan@example.go.id, dan
<a href="https://www.lapor.go.id">SP4N-LAPOR!</a></p>
<h3>Maklumat Pelayanan</h3>
<p>Kami sanggup menyelenggarakan pelayanan sesuai standar yang telah ditetapkan.</p>
</article></div>
<footer><p>&copy; 2026 DPMPTSP</p></footer></body></html>
"""

# Five components in the main content; "Biaya" only in the menu and the footer.
FOOTER_HTML = f"""<!DOCTYPE html><html lang="id"><head><meta charset="utf-8">
<title>Layanan Rekomendasi | Dinas Contoh</title></head><body>
{NAV}
<main>
<h1>Rekomendasi Izin Keramaian</h1>
<h2>Persyaratan</h2><ul><li>Surat permohonan</li><li>Fotokopi KTP</li></ul>
<h2>Prosedur</h2><ol><li>Ajukan berkas</li><li>Verifikasi</li></ol>
<h2>Jangka Waktu Pelayanan</h2><p>2 hari kerja</p>
<h2>Produk Pelayanan</h2><p>Surat rekomendasi</p>
<h2>Pengaduan</h2><p>Melalui <a href="https://www.lapor.go.id">SP4N-LAPOR!</a> atau SMS 1708</p>
<h2>Maklumat Pelayanan</h2><p>Kami berjanji melayani sesuai standar pelayanan.</p>
</main>
<footer><h4>Biaya</h4><p>Informasi biaya layanan ada di loket.</p></footer>
</body></html>
"""


# =========================================================================== certificates

@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def make_ca() -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = new_ca("verify test CA")
    return Pem(cert_pem(cert), key_pem(key)), cert, key


def make_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str],
              ips: list[str], not_before: dt.datetime, not_after: dt.datetime) -> Pem:
    cert, key = new_leaf(ca, ca_key, names + ips, not_before=not_before, not_after=not_after)
    return Pem(cert_pem(cert, ca), key_pem(key))


# =========================================================================== sites

@dataclass(frozen=True)
class SiteSpec:
    """One test site: how it is served and what is wrong with it."""

    slug: str
    served_by: str = "web1"  # the lab host whose nginx serves it
    external: bool = False  # an `external:` agency (hosted elsewhere) instead of `host:`
    cert: str = "good"  # good | expired | wrong-name
    redirect: bool = True
    content: str = "starter"  # starter | nginx-default | footer | external
    address: str | None = None  # A record target other than the serving host
    extra_listen: str | None = None  # "ip:port" also served over TLS (default_server)
    plain_listen: str | None = None  # "ip:port" also served over plain HTTP (default_server)
    vhost: bool = True  # False: DNS only, the host has no vhost for the name


@dataclass
class Sites:
    """The test inventory, its lab and what was set up (for the tests and for cleanup)."""

    lab: TestLab
    inventory_dir: Path
    ca_file: Path
    specs: dict[str, SiteSpec]
    inventory: Inventory = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = load_inventory(self.inventory_dir, self.lab.state_dir)

    def fqdn(self, slug: str) -> str:
        return f"{slug}.{self.lab.inventory.settings.zone}"

    def cli(self, *args: str, inventory_dir: Path | None = None) -> CliResult:
        return run_cli(inventory_dir or self.inventory_dir, self.lab.state_dir, *args)

    def verify(self, target: str, *args: str, inventory_dir: Path | None = None) -> tuple[dict, int]:
        result = self.cli("verify", target, "--ca", str(self.ca_file), "--format", "json", *args,
                          inventory_dir=inventory_dir)
        assert result.stdout.strip(), result.stderr
        return json.loads(result.stdout), result.exit_code


def write_agencies(inventory_dir: Path, specs: list[SiteSpec], zone: str) -> None:
    sample = yaml.safe_load((SAMPLE_INVENTORY / "agencies" / "dinkes.yml").read_text())
    for spec in specs:
        data = {**sample, "slug": spec.slug}
        data.pop("host", None)
        if spec.external:
            data["external"] = f"https://{spec.slug}.{zone}/"
        else:
            data["host"] = spec.served_by
        (inventory_dir / "agencies" / f"{spec.slug}.yml").write_text(
            yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def vhost_text(fqdn: str, address: str, root: Path, cert: Path, key: Path, spec: SiteSpec) -> str:
    http_body = "return 301 https://$host$request_uri;" if spec.redirect \
        else f"root {root}; index index.html;"
    extra = ""
    if spec.extra_listen:
        extra = (f"server {{\n    listen {spec.extra_listen} ssl default_server;\n"
                 f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
                 f"    root {root};\n    index index.html;\n{SECURITY_HEADERS}}}\n")
    if spec.plain_listen:
        extra += (f"server {{\n    listen {spec.plain_listen} default_server;\n"
                  f"    root {root};\n    index index.html;\n}}\n")
    return (f"server {{\n    listen {address}:80;\n    server_name {fqdn};\n    {http_body}\n}}\n"
            f"server {{\n    listen {address}:443 ssl;\n    server_name {fqdn};\n"
            f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
            f"    root {root};\n    index index.html;\n{SECURITY_HEADERS}}}\n{extra}")


def site_files(spec: SiteSpec, inventory: Inventory) -> dict[str, bytes]:
    if spec.content == "starter":
        return site.render_site(inventory.agencies[spec.slug])
    if spec.content == "nginx-default":
        return {"index.html": NGINX_DEFAULT_PAGE.read_bytes()}
    return {"index.html": (FOOTER_HTML if spec.content == "footer" else EXTERNAL_HTML).encode()}


def tsig_key(lab: TestLab) -> dns.tsig.Key:
    return load_tsig_key(lab.inventory.settings.tsig_key_file).dnspython_key()


def dns_update(lab: TestLab, records: dict[str, str | None], rdtype: str = "A") -> None:
    """Set (address) or delete (None) A (or AAAA) records in one signed update; wait for ns2."""
    settings = lab.inventory.settings
    message = dns.update.UpdateMessage(settings.zone, keyring=tsig_key(lab))
    for name, address in records.items():
        if address:
            message.replace(name + ".", 60, rdtype, address)
        else:
            message.delete(name + ".", rdtype)
    response = dns.query.tcp(message, settings.primary.address, timeout=5,
                             port=settings.primary.port)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    ns2 = settings.nameservers[1]
    deadline = time.monotonic() + 10
    for name, address in records.items():
        while True:
            answer = dns.query.udp(dns.message.make_query(name, rdtype), ns2.address, timeout=2,
                                   port=ns2.port)
            present = any(r.address == address for rrset in answer.answer for r in rrset
                          if hasattr(r, "address"))
            if present == bool(address):
                break
            assert time.monotonic() < deadline, f"ns2 never caught up for {name}"
            time.sleep(0.05)


@contextmanager
def served_sites(lab: TestLab, root: Path, specs: list[SiteSpec]) -> Iterator[Sites]:
    """An inventory of these agencies, their certificates, vhosts, files and A records."""
    zone = lab.inventory.settings.zone
    inventory_dir = make_test_inventory(root / "inventory", lab.prefix, agencies=False)
    write_agencies(inventory_dir, specs, zone)
    ca_pem, ca, ca_key = make_ca()
    ca_file = root / "ca.pem"
    ca_file.write_bytes(ca_pem.cert)
    sites = Sites(lab, inventory_dir, ca_file, {s.slug: s for s in specs})
    now = dt.datetime.now(dt.timezone.utc)
    names = [sites.fqdn(s.slug) for s in specs]
    extra_ips = [s.extra_listen.split(":")[0] for s in specs if s.extra_listen]
    certs = {
        "good": make_leaf(ca, ca_key, names, extra_ips, now - dt.timedelta(days=1),
                          now + dt.timedelta(days=60)),
        "expired": make_leaf(ca, ca_key, names, [], now - dt.timedelta(days=90),
                             now - dt.timedelta(days=2)),
        "wrong-name": make_leaf(ca, ca_key, ["www.example.org"], [], now - dt.timedelta(days=1),
                                now + dt.timedelta(days=60)),
    }
    written: list[Path] = []
    hosts = {lab.inventory.hosts[s.served_by] for s in specs}
    try:
        for spec in (s for s in specs if s.vhost):
            host = lab.inventory.hosts[spec.served_by]
            local = functools.partial(lab.lab.local, host)  # web3's files: in its mounts
            fqdn = sites.fqdn(spec.slug)
            tls = host.tls_dir / f"verify-{spec.slug}"
            local(tls).mkdir(parents=True, exist_ok=True)
            local(tls / "fullchain.pem").write_bytes(certs[spec.cert].cert)
            local(tls / "privkey.pem").write_bytes(certs[spec.cert].key)
            web = host.web_root / f"verify-{spec.slug}"
            written += [local(tls), local(web)]
            site.write_files(site_files(spec, sites.inventory), local(web))
            vhost = local(host.nginx_sites_dir / f"verify-{spec.slug}.conf")
            written.append(vhost)
            vhost.write_text(vhost_text(fqdn, host.public_ipv4, web, tls / "fullchain.pem",
                                        tls / "privkey.pem", spec))
        for host in hosts:
            lab.lab.reload_nginx(host)
        dns_update(lab, {sites.fqdn(s.slug): s.address or lab.inventory.hosts[s.served_by]
                         .public_ipv4 for s in specs})
        yield sites
    finally:
        for path in written:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        for host in hosts:
            lab.lab.reload_nginx(host)
        dns_update(lab, {sites.fqdn(s.slug): None for s in specs})


@contextmanager
def black_hole(address: str) -> Iterator[str]:
    """Ports 80 and 443 that accept connections and never answer: a server that hangs."""
    with ExitStack() as stack:
        for port in (80, 443):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
        yield address


@contextmanager
def lagging_ns2(lab: TestLab, root: Path, address: str) -> Iterator[None]:
    """A second real BIND serving the lab's zone with only SOA, NS and glue (an older
    serial): an ns2 that has not received the agency records."""
    settings = lab.inventory.settings
    zone = settings.zone
    folder = root / "ns2-lagging"
    folder.mkdir()
    (folder / "zone.db").write_text(
        f"$TTL 60\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 10 604800 60\n"
        f"@ IN NS ns1.{zone}.\n@ IN NS ns2.{zone}.\n"
        f"ns1 IN A {settings.nameservers[0].address}\nns2 IN A {address}\n")
    (folder / "named.conf").write_text(
        f'options {{ directory "{folder}"; pid-file "{folder}/named.pid"; '
        f'listen-on port 53 {{ {address}; }}; listen-on-v6 {{ none; }}; recursion no; '
        f'allow-query {{ any; }}; dnssec-validation no; }};\ncontrols {{ }};\n'
        f'zone "{zone}" {{ type primary; file "{folder}/zone.db"; }};\n')
    added = address not in loopback_addresses()
    if added:
        add_loopback(address)
    process = subprocess.Popen(["/usr/sbin/named", "-f", "-4", "-c", str(folder / "named.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query(zone, "SOA"), address, timeout=0.2)
                break
            except (dns.exception.Timeout, OSError):
                assert time.monotonic() < deadline, "the lagging ns2 did not start"
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        if added:
            remove_loopback(address)


def inventory_with_ns2(sites: Sites, root: Path, address: str) -> Path:
    """A copy of the sites' inventory whose ns2 is the lagging server."""
    copy = root / "inventory-ns2-lagging"
    shutil.copytree(sites.inventory_dir, copy)
    path = copy / "group_vars" / "all.yml"
    data = yaml.safe_load(path.read_text())
    data["nameservers"][1]["address"] = address
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


# =========================================================================== fixture

SPECS = [
    SiteSpec("v-healthy"),
    SiteSpec("v-nsgap"),
    SiteSpec("v-noredir", redirect=False),
    SiteSpec("v-expired", served_by="web2", cert="expired"),
    SiteSpec("v-wrongname", served_by="web2", cert="wrong-name"),
    SiteSpec("v-default", served_by="web2", content="nginx-default"),
    SiteSpec("v-footer", content="footer"),
    SiteSpec("v-external", served_by="web2", external=True, content="external"),
    SiteSpec("v-hang", external=True),  # its A record points at the black hole
    SiteSpec("v-novhost", vhost=False),  # DNS left behind, no site on the host
]


@pytest.fixture(scope="module")
def sites(lab: TestLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("verify")
    hole = f"{lab.prefix}.13"
    web2 = lab.inventory.hosts["web2"].public_ipv4
    specs = [SiteSpec(s.slug, s.served_by, s.external, s.cert, s.redirect, s.content,
                      hole if s.slug == "v-hang" else None,
                      f"{web2}:8443" if s.slug == "v-external" else None,
                      f"{web2}:8080" if s.slug == "v-external" else None, s.vhost)
             for s in SPECS]
    with black_hole(hole), served_sites(lab, root, specs) as served:
        yield served


def statuses(document: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in document["checks"]}


def detail(document: dict, check: str) -> str:
    return next(c["detail"] for c in document["checks"] if c["id"] == check)


def assert_statuses(document: dict, **expected: str) -> None:
    found = statuses(document)
    wanted = {k.replace("__", "."): v for k, v in expected.items()}
    assert {k: found[k] for k in wanted} == wanted, json.dumps(document["checks"], indent=1)


ALL_SIX = {"persyaratan", "prosedur", "waktu", "biaya", "produk", "pengaduan"}


# =========================================================================== tests

def test_healthy_site_passes_everything(sites: Sites) -> None:
    document, code = sites.verify("v-healthy")
    assert code == 0
    assert set(document) == {"agency", "url", "active", "checks", "publication", "cert"}
    assert document["agency"] == "v-healthy" and document["active"] is True
    assert document["url"] == f"https://{sites.fqdn('v-healthy')}/"
    assert set(statuses(document).values()) == {"pass"}, json.dumps(document["checks"], indent=1)
    publication = document["publication"]
    assert set(publication) == {"score", "components", "evidence", "documents", "notes"}
    assert (publication["score"], publication["components"]) == (100.0, dict.fromkeys(
        (*ALL_SIX, "maklumat", "lapor"), True))
    assert set(publication["evidence"]) == set(publication["components"])  # page + snippet each
    assert all(0 < len(e["snippet"]) <= 160 for e in publication["evidence"].values())
    assert 58 <= document["cert"]["days_left"] <= 60
    assert "ns1" in detail(document, "dns.authoritative")
    assert "ns2" in detail(document, "dns.authoritative")
    assert detail(document, "http.redirect").startswith("redirection-to-https")


def test_healthy_site_fails_chain_without_the_test_ca(sites: Sites) -> None:
    result = sites.cli("verify", "v-healthy", "--format", "json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1
    assert_statuses(document, tls__chain="fail", tls__name="pass", tls__expiry="pass")
    assert "self-signed certificate in certificate chain" in detail(document, "tls.chain")
    assert document["active"] is False


def test_name_missing_at_ns2_only(sites: Sites, lab: TestLab, tmp_path: Path) -> None:
    address = f"{lab.prefix}.15"  # .12 is the lab's PowerDNS
    with lagging_ns2(lab, tmp_path, address):
        document, code = sites.verify("v-nsgap",
                                      inventory_dir=inventory_with_ns2(sites, tmp_path, address))
    assert code == 1 and document["active"] is False
    assert_statuses(document, dns__resolves="pass", dns__authoritative="fail",
                    dns__consistent="pass", dns__soa_serial="warn", dns__points_to_host="pass",
                    https__status="pass")
    missing = detail(document, "dns.authoritative")
    assert missing.startswith("missing at ns2.") and "NXDOMAIN" in missing and "ns1" not in missing


def test_aaaa_is_checked_at_every_server_when_the_host_has_ipv6(sites: Sites, lab: TestLab,
                                                                  tmp_path: Path) -> None:
    """web1 given an IPv6 address (documentation range: only DNS is asked about it, every
    connection still goes to the A address): its agencies need that AAAA at ns1 and ns2."""
    ipv6 = "2001:db8::20"
    copy = tmp_path / "inventory-ipv6"
    shutil.copytree(sites.inventory_dir, copy)
    hosts = copy / "hosts.yml"
    data = yaml.safe_load(hosts.read_text())
    data["all"]["children"]["webservers"]["hosts"]["web1"]["public_ipv6"] = ipv6
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))
    healthy = sites.fqdn("v-healthy")
    dns_update(lab, {healthy: ipv6}, "AAAA")
    try:
        with_aaaa, code = sites.verify("v-healthy", inventory_dir=copy)
        without_aaaa, _ = sites.verify("v-noredir", inventory_dir=copy)
    finally:
        dns_update(lab, {healthy: None}, "AAAA")
    assert code == 0 and with_aaaa["active"] is True
    assert_statuses(with_aaaa, dns__points_to_host="pass")
    assert f"AAAA {ipv6} at every server" in detail(with_aaaa, "dns.points_to_host")
    assert without_aaaa["active"] is True  # still reachable over IPv4: a finding, not down
    assert_statuses(without_aaaa, dns__points_to_host="fail", dns__resolves="pass")
    missing = detail(without_aaaa, "dns.points_to_host")
    assert f"AAAA expected {ipv6}" in missing and "ns1." in missing and "ns2." in missing


def test_no_redirect_fails_only_the_redirect(sites: Sites) -> None:
    document, code = sites.verify("v-noredir")
    assert code == 1 and document["active"] is True
    failing = {k: v for k, v in statuses(document).items() if v != "pass"}
    assert failing == {"http.redirect": "fail"}
    assert detail(document, "http.redirect").startswith("redirection-missing: http:// answers 200")


def test_expired_certificate_is_recorded(sites: Sites) -> None:
    document, code = sites.verify("v-expired")
    assert code == 1 and document["active"] is False
    assert_statuses(document, tls__chain="fail", tls__name="pass", tls__expiry="fail",
                    tls__version="pass", https__status="pass")
    assert document["cert"]["days_left"] in (-3, -2)
    assert dt.datetime.fromisoformat(document["cert"]["not_after"]) < dt.datetime.now(dt.timezone.utc)
    assert "certificate has expired" in detail(document, "tls.chain")
    assert document["publication"]["score"] == 100.0  # read anyway, for the report


def test_wrong_name_certificate(sites: Sites) -> None:
    document, code = sites.verify("v-wrongname")
    assert code == 1 and document["active"] is False
    assert_statuses(document, tls__chain="pass", tls__name="fail", tls__expiry="pass")
    assert "www.example.org" in detail(document, "tls.name")


def test_nginx_default_page_is_not_content(sites: Sites) -> None:
    document, code = sites.verify("v-default")
    assert code == 1 and document["active"] is False
    assert_statuses(document, https__status="pass", https__content="fail", tls__chain="pass")
    assert "nginx default page" in detail(document, "https.content")
    assert document["publication"]["score"] == 0.0


def test_biaya_only_in_the_footer_does_not_count(sites: Sites) -> None:
    document, _ = sites.verify("v-footer")
    components = document["publication"]["components"]
    assert document["active"] is True
    assert components["biaya"] is False
    assert {k for k, v in components.items() if v} == ALL_SIX - {"biaya"} | {"maklumat", "lapor"}
    assert document["publication"]["score"] == 86.0
    assert_statuses(document, publication__biaya="fail", publication__prosedur="pass")


def test_external_page_with_other_heading_variants(sites: Sites) -> None:
    document, code = sites.verify("v-external")
    assert document["agency"] == "v-external" and document["active"] is True
    assert all(document["publication"]["components"].values()), document["publication"]
    assert document["publication"]["score"] == 100.0
    assert_statuses(document, dns__points_to_host="skip", dns__authoritative="pass")
    assert code == 0


def test_any_url_with_an_ip_address_and_port(sites: Sites) -> None:
    web2 = sites.lab.inventory.hosts["web2"].public_ipv4
    document, code = sites.verify(f"https://{web2}:8443/")
    assert document["agency"] is None and document["url"] == f"https://{web2}:8443/"
    assert {statuses(document)[c] for c in statuses(document) if c.startswith("dns.")} == {"skip"}
    assert_statuses(document, http__redirect="skip", tls__chain="pass", tls__name="pass",
                    https__status="pass")
    assert document["publication"]["score"] == 100.0
    assert document["active"] is True and code == 0


def test_plain_http_url_on_another_port(sites: Sites) -> None:
    web2 = sites.lab.inventory.hosts["web2"].public_ipv4
    document, code = sites.verify(f"http://{web2}:8080/")
    assert document["url"] == f"http://{web2}:8080/" and code == 1
    assert_statuses(document, http__redirect="fail", tls__chain="skip", https__status="skip",
                    https__content="skip", publication__biaya="pass")
    assert document["publication"]["score"] == 100.0  # read over http://
    assert document["active"] is False  # no HTTPS: not active


def test_unreachable_server_is_error_not_fail(sites: Sites) -> None:
    started = time.monotonic()
    document, code = sites.verify("v-hang", "--timeout", "0.5")
    assert time.monotonic() - started < 10
    assert code == 1 and document["active"] is False
    assert_statuses(document, dns__resolves="pass", http__redirect="error", tls__chain="error",
                    https__status="error", publication__biaya="skip")
    assert document["cert"] == {"not_after": None, "days_left": None}


def test_name_without_a_site_on_the_host(sites: Sites) -> None:
    """The host's catch-all servers: 444 on http://, no TLS handshake for unknown names."""
    document, code = sites.verify("v-novhost")
    assert code == 1 and document["active"] is False
    assert_statuses(document, dns__resolves="pass", dns__points_to_host="pass",
                    http__redirect="warn", tls__chain="fail", https__status="fail",
                    publication__persyaratan="skip")
    assert "closed the connection without an answer" in detail(document, "http.redirect")
    assert "handshake refused" in detail(document, "tls.chain")


def test_table_output_and_user_errors(sites: Sites) -> None:
    result = sites.cli("verify", "v-footer", "--ca", str(sites.ca_file))
    assert result.exit_code == 1
    assert "publication.biaya" in result.stdout and "missing: biaya" in result.stdout
    unknown = sites.cli("verify", "no-such-agency")
    assert unknown.exit_code == 2 and "unknown agency" in unknown.stderr
    missing_ca = sites.cli("verify", "v-healthy", "--ca", "/nonexistent/ca.pem")
    assert missing_ca.exit_code == 2
