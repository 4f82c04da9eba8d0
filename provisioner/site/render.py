"""Render an agency's starter site and nginx vhost from templates/ (pure: no host touched).

The site publishes the agency's public-service standards (UU 25/2009 art. 21,
PermenPANRB 15/2014): a home page, one page per service with the six delivery
components, the service pledge (maklumat), how to complain (SP4N-LAPOR!) and the
same content as ``standar-pelayanan.json``. Files are rendered into memory
(relative path -> bytes) so a deploy step can ship a whole host in one transfer;
the manifest among them lets a re-deploy leave pages the agency has edited alone
(``plan_site_files``).

Everything interpolated into the vhost is re-validated here, whatever the registry
already checked: a hostile value raises ``RenderError`` and is never written.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import jinja2

from ..errors import RenderError
from ..hosts import hostlib
from ..hosts.hostlib import MANIFEST_SCHEMA, owned_file, sha256_hex
from ..paths import TEMPLATES_DIR
from ..registry.fields import LABEL_RE, UNSAFE_RE, URL_RE, is_hostname
from ..registry.models import (
    DELIVERY_COMPONENTS,
    LAPOR_CHANNEL_NAME,
    MANAGEMENT_COMPONENTS,
    Agency,
    ComplaintChannel,
    Host,
    Inventory,
    Service,
    Settings,
)

SCHEMA = "provisioner/standar-pelayanan/v1"
MANIFEST_PATH = ".provisioner-manifest.json"
DATA_PATH = "standar-pelayanan.json"
STATIC_ASSETS = ("assets/situs.css", "assets/logo.svg")
LAPOR_URL = "https://www.lapor.go.id"
LAPOR_SMS = "1708"

# Headings of the 14 components of UU 25/2009 art. 21, in the law's order (letters a-n).
COMPONENT_HEADINGS: dict[str, str] = {
    "dasar_hukum": "Dasar Hukum",
    "persyaratan": "Persyaratan",
    "prosedur": "Sistem, Mekanisme, dan Prosedur",
    "jangka_waktu": "Jangka Waktu Penyelesaian",
    "biaya": "Biaya/Tarif",
    "produk": "Produk Pelayanan",
    "sarana": "Sarana, Prasarana, dan/atau Fasilitas",
    "kompetensi": "Kompetensi Pelaksana",
    "pengawasan": "Pengawasan Internal",
    "pengaduan": "Penanganan Pengaduan, Saran, dan Masukan",
    "jumlah_pelaksana": "Jumlah Pelaksana",
    "jaminan_pelayanan": "Jaminan Pelayanan",
    "jaminan_keamanan": "Jaminan Keamanan dan Keselamatan Pelayanan",
    "evaluasi_kinerja": "Evaluasi Kinerja Pelaksana",
}
assert set(COMPONENT_HEADINGS) == set(DELIVERY_COMPONENTS) | set(MANAGEMENT_COMPONENTS)


# --------------------------------------------------------------------------- the site

@dataclass(frozen=True)
class Component:
    """One published component of a service, as the page and the JSON show it."""

    key: str
    heading: str
    items: tuple[str, ...]


def service_path(service: Service) -> str:
    """The service page's path inside the site (its slug is re-checked: it names a file)."""
    if not LABEL_RE.match(service.slug):
        raise RenderError(f"service {service.name!r}: page name {service.slug!r} is not a "
                          "safe file name", hint="lowercase letters, digits and hyphens")
    return f"layanan/{service.slug}.html"


def site_url(agency: Agency, path: str = "") -> str:
    return f"https://{_checked_fqdn(agency)}/{path}"


def delivery_components(service: Service) -> list[Component]:
    return [_component(key, service.components[key]) for key in DELIVERY_COMPONENTS]


def management_components(service: Service) -> list[Component]:
    """The internal-management components the agency chose to publish, in legal order."""
    return [_component(key, service.management[key])
            for key in MANAGEMENT_COMPONENTS if service.management.get(key)]


def _component(key: str, items: tuple[str, ...]) -> Component:
    return Component(key=key, heading=COMPONENT_HEADINGS[key], items=tuple(items))


def own_complaint_channels(agency: Agency) -> list[ComplaintChannel]:
    """The agency's own channels; SP4N-LAPOR! is shown from constants, never from input."""
    return [ch for ch in agency.complaint_channels if ch.name != LAPOR_CHANNEL_NAME]


def standard_document(agency: Agency) -> dict:
    """The machine-readable service standard (schema ``provisioner/standar-pelayanan/v1``)."""
    return {
        "schema": SCHEMA,
        "slug": agency.slug,
        "name": agency.name,
        "short_name": agency.short_name,
        "url": site_url(agency),
        "description": agency.description,
        "address": agency.address,
        "phone": agency.phone,
        "email": agency.email,
        "opening_hours": list(agency.opening_hours),
        "head": {"name": agency.head.name, "title": agency.head.title},
        "sample": agency.sample,
        "maklumat": {"text": agency.maklumat, "url": site_url(agency, "maklumat.html")},
        "pengaduan": {
            "url": site_url(agency, "pengaduan.html"),
            "lapor": {"url": LAPOR_URL, "sms": LAPOR_SMS},
            "channels": [{"name": ch.name, "contact": ch.contact, "url": _http_url(ch.url)}
                         for ch in own_complaint_channels(agency)],
        },
        "services": [
            {
                "name": service.name,
                "slug": service.slug,
                "url": site_url(agency, service_path(service)),
                "description": service.description,
                "komponen": {c.key: list(c.items) for c in
                             delivery_components(service) + management_components(service)},
            }
            for service in agency.services
        ],
    }


def render_site(agency: Agency) -> dict[str, bytes]:
    """Every file of the agency's starter site (relative path -> content), manifest included.

    The output is deterministic (no dates), so re-rendering unchanged data changes nothing.
    """
    _checked_fqdn(agency)
    _checked_slug(agency)
    env = _site_env()
    pages = {"index.html": ("index.html.j2", {}),
             "maklumat.html": ("maklumat.html.j2", {}),
             "pengaduan.html": ("pengaduan.html.j2", {}),
             "404.html": ("404.html.j2", {})}
    for service in agency.services:
        pages[service_path(service)] = ("layanan.html.j2", {"service": service})
    files: dict[str, bytes] = {}
    for path, (template, extra) in pages.items():
        context = {"agency": agency, "page": path, "root": _root_of(path), **extra}
        files[path] = env.get_template(template).render(context).encode()
    files[DATA_PATH] = (json.dumps(standard_document(agency), ensure_ascii=False, indent=2)
                        + "\n").encode()
    for asset in STATIC_ASSETS:
        files[asset] = (TEMPLATES_DIR / "site" / asset).read_bytes()
    files[MANIFEST_PATH] = manifest_bytes(agency, files)
    return files


def _root_of(path: str) -> str:
    """Relative prefix from a page back to the site root; the 404 page is served at any depth."""
    if path == "404.html":
        return "/"
    return "../" * path.count("/")


def _http_url(url: str | None) -> str | None:
    """Only plain http(s) URLs become links (defence in depth behind the registry)."""
    return url if url and URL_RE.match(url) else None


@functools.cache
def _site_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "site"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(
        LAPOR_URL=LAPOR_URL, LAPOR_SMS=LAPOR_SMS, DATA_PATH=DATA_PATH,
        service_path=service_path, delivery_components=delivery_components,
        management_components=management_components,
        own_complaint_channels=own_complaint_channels, http_url=_http_url,
    )
    env.filters["paragraphs"] = _paragraphs
    env.filters["tel"] = _tel
    return env


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _tel(phone: str) -> str:
    """A tel: target from a displayed number: '(0543) 21170' -> '054321170'."""
    return "".join(ch for ch in phone if ch.isdigit() or ch == "+")


# --------------------------------------------------------------------------- manifest + plan

def manifest_bytes(agency: Agency, files: dict[str, bytes]) -> bytes:
    """The manifest: what we generated (path -> sha256), so a re-deploy can spot edits."""
    hashes = {path: sha256_hex(data) for path, data in sorted(files.items())
              if path != MANIFEST_PATH}
    document = {"schema": MANIFEST_SCHEMA, "agency": agency.slug, "files": hashes}
    return (json.dumps(document, indent=2) + "\n").encode()


def parse_manifest(data: bytes, origin: str = MANIFEST_PATH) -> dict[str, str]:
    """The path -> sha256 map of a deployed manifest; RenderError when it is not one."""
    try:
        return hostlib.manifest_files(data)
    except ValueError as exc:
        raise RenderError(f"{origin}: not a provisioner site manifest ({exc})",
                          hint="move the file aside; without a manifest every differing "
                               "page is kept as edited") from None


Action = Literal["create", "update", "unchanged", "keep-edited", "remove"]


@dataclass(frozen=True)
class FileChange:
    path: str
    action: Action
    reason: str


def plan_site_files(rendered: dict[str, bytes], deployed_manifest: dict[str, str] | None,
                    current_hashes: dict[str, str]) -> list[FileChange]:
    """Decide per file what a deploy does, never overwriting what the agency edited
    (``hostlib.plan_site_files``: the rules the host agent applies), by path.

    ``deployed_manifest`` is what we generated last time (None before the first deploy),
    ``current_hashes`` the sha256 of the files now on the host (relative paths).
    """
    plan = hostlib.plan_site_files({path: sha256_hex(data) for path, data in rendered.items()},
                                   deployed_manifest, current_hashes, MANIFEST_PATH)
    return [FileChange(path, *plan[path]) for path in sorted(plan)]


def write_files(files: dict[str, bytes], directory: Path) -> list[Path]:
    """Write rendered files under ``directory`` (created as needed); return the paths.

    ``directory`` may be in a folder other users write to (``-o /tmp/dinkes``), so nothing
    is written through a symlink: ``directory`` and every folder below it must be a real
    folder owned by whoever runs this (another user's is refused, RenderError), each one
    opened with O_NOFOLLOW relative to its parent; files go to an O_EXCL temp file
    renamed within their folder (hostlib's primitives, as on a host)."""
    written = []
    root_fd = _own_folder(directory)
    try:
        for rel, data in sorted(files.items()):
            path = _safe_relative(rel)
            target = directory / path
            try:
                parent = _own_subfolder(root_fd, directory, path.parts[:-1])
                try:
                    hostlib.write_at(parent, path.name, data, 0o644)
                finally:
                    os.close(parent)
            except OSError as exc:
                raise RenderError(f"cannot write {target}: {_why(exc)}") from None
            written.append(target)
    finally:
        os.close(root_fd)
    return written


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symlink or a file is in the way (refusing to follow it)"
    return exc.strerror or str(exc)


def _own_folder(directory: Path) -> int:
    """Descriptor of ``directory`` (created 0755 when missing): a real folder of ours."""
    directory = Path(os.path.abspath(directory))
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with hostlib.folder(str(directory.parent)) as parent:
            return _own_subfolder(parent, directory.parent, (directory.name,))
    except OSError as exc:
        raise RenderError(f"cannot write to {directory}: {_why(exc)}",
                          hint="choose a folder of your own") from None


def _own_subfolder(dir_fd: int, where: Path, parts: tuple[str, ...]) -> int:
    """Descriptor of ``parts`` below ``dir_fd``, each folder created or checked to be ours."""
    fd = os.dup(dir_fd)
    try:
        for name in parts:
            child = hostlib.open_below(fd, [name], create=True)
            os.close(fd)
            fd = child
            where = where / name
            owner = os.fstat(fd).st_uid
            if owner != os.geteuid():
                raise RenderError(f"refusing to write into {where}: it belongs to another "
                                  f"user (uid {owner})", hint="choose a folder of your own")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _safe_relative(rel: str) -> PurePosixPath:
    """``rel`` by hostlib's rules (the host agent's): relative, plain, not the folder itself."""
    try:
        parts = hostlib.split_rel(rel)
    except ValueError:
        parts = []
    if not parts:
        raise RenderError(f"refusing to write {rel!r}: not a path inside the site folder")
    return PurePosixPath(*parts)


# --------------------------------------------------------------------------- preview

def render_preview(agency: Agency, inventory: Inventory, *, tls_ready: bool) -> dict[str, bytes]:
    """Everything the web step would install for one agency: ``site/...`` and ``nginx/<slug>.conf``."""
    if not agency.hosted:
        where = f"hosted elsewhere ({agency.external_url})" if agency.external_url else "offboarded"
        raise RenderError(f"agency {agency.slug!r} is {where}: there is no site to render here")
    host = inventory.hosts[agency.host]
    files = {f"site/{path}": data for path, data in render_site(agency).items()}
    files[f"nginx/{vhost_path(agency, host).name}"] = render_vhost(
        agency, host, inventory.settings, tls_ready=tls_ready)
    return files


# --------------------------------------------------------------------------- the vhost

@dataclass(frozen=True)
class CertPaths:
    fullchain: Path
    key: Path


def cert_paths(agency: Agency, host: Host, settings: Settings) -> CertPaths:
    """Where the agency's certificate lives on its host (the TLS step installs it there).

    http-01: ``<tls_dir>/<slug>/``; dns-01-wildcard: one ``<tls_dir>/wildcard.<zone>/``.
    """
    if settings.tls_mode == "dns-01-wildcard":
        folder = f"wildcard.{_checked_hostname(settings.zone, 'zone')}"
    else:
        folder = _checked_slug(agency)
    base = _checked_path(host.tls_dir, "tls_dir") / folder
    return CertPaths(fullchain=base / "fullchain.pem", key=base / "privkey.pem")


def site_dir(agency: Agency, host: Host) -> Path:
    """The folder nginx serves the agency's site from: ``<web_root>/<slug>``."""
    return _checked_path(host.web_root, "web_root") / _checked_slug(agency)


def vhost_path(agency: Agency, host: Host) -> Path:
    """The vhost file: ``<nginx_sites_dir>/<slug>.conf`` (the main config includes *.conf)."""
    return _checked_path(host.nginx_sites_dir, "nginx_sites_dir") / f"{_checked_slug(agency)}.conf"


def acme_challenge_dir(host: Host) -> Path:
    """Where HTTP-01 tokens go: nginx serves ``/.well-known/acme-challenge/`` from here."""
    return _checked_path(host.acme_webroot, "acme_webroot") / ".well-known" / "acme-challenge"


def render_vhost(agency: Agency, host: Host, settings: Settings, *, tls_ready: bool) -> bytes:
    """The agency's nginx server blocks.

    Before its certificate exists (``tls_ready`` False) the site is served over HTTP;
    afterwards HTTP only answers ACME challenges and redirects to HTTPS.
    """
    listen = [_checked_ipv4(host.public_ipv4)]
    if host.public_ipv6:
        listen.append(f"[{_checked_ipv6(host.public_ipv6)}]")
    log_dir = _checked_path(host.log_dir, "log_dir")
    slug = _checked_slug(agency)
    context = {
        "slug": slug,
        "server_name": _checked_fqdn(agency),
        "listen_addresses": listen,
        "site_root": site_dir(agency, host),
        "acme_webroot": _checked_path(host.acme_webroot, "acme_webroot"),
        "access_log": log_dir / f"{slug}.access.log",
        "error_log": log_dir / f"{slug}.error.log",
        "tls_ready": tls_ready,
        "cert": cert_paths(agency, host, settings) if tls_ready else None,
    }
    return owned_file(_nginx_env().get_template("vhost.conf.j2").render(context).encode())


@functools.cache
def _nginx_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "nginx"),
        autoescape=False,  # nginx syntax, not HTML: every value is validated instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _checked_slug(agency: Agency) -> str:
    if not isinstance(agency.slug, str) or not LABEL_RE.match(agency.slug):
        raise RenderError(f"agency slug {agency.slug!r} is not a safe name",
                          hint="lowercase letters, digits and hyphens")
    return agency.slug


def _checked_fqdn(agency: Agency) -> str:
    return _checked_hostname(agency.fqdn, f"agency {agency.slug!r}: fqdn")


def _checked_hostname(name: str, what: str) -> str:
    if not is_hostname(name):
        raise RenderError(f"{what} {name!r} is not a valid host name",
                          hint="letters, digits and hyphens in dot-separated labels")
    return name.rstrip(".").lower()


def _checked_path(path: Path, what: str) -> Path:
    text = str(path)
    if (UNSAFE_RE.search(text) or not text.startswith("/") or ".." in Path(text).parts
            or any(ord(ch) < 32 for ch in text)):
        raise RenderError(f"host path {what} {text!r} is not a safe absolute path",
                          hint="no spaces, quotes, ';', '{', '}', '$' or '..'")
    return Path(text)


def _checked_ipv4(address: str) -> str:
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise RenderError(f"public_ipv4 {address!r} is not an IPv4 address") from None


def _checked_ipv6(address: str) -> str:
    try:
        return str(ipaddress.IPv6Address(address))
    except ValueError:
        raise RenderError(f"public_ipv6 {address!r} is not an IPv6 address") from None
