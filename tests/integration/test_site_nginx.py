"""Every rendered vhost passes the real ``nginx -t`` and gixy (no medium or high finding),
and a TLS-ready vhost behaves as designed when a real nginx serves it.

No lab needed: the vhosts of all sample agencies are rendered for sandbox copies of
their hosts (tmp folders, addresses on PROVISIONER_TEST_NET), with throwaway
self-signed ECDSA certificates where TLS is on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from provisioner.registry.load import load_inventory
from provisioner.site import render as site

from .conftest import SAMPLE_INVENTORY, TEST_NET
from .nginx_sandbox import (
    RunningNginx,
    nginx_test,
    sandbox_host,
    write_main_conf,
    write_self_signed_cert,
)

GIXY = Path(sys.executable).with_name("gixy")
NOBODY = 65534  # a user that owns neither the web root nor the file it links to
INVENTORY = load_inventory(SAMPLE_INVENTORY, Path("/nonexistent/provisioner-state"))

# variant: (tls_ready, tls_mode, public_ipv6)
VARIANTS = {
    "http-before-certificate": (False, "http-01", None),
    "https-per-agency-cert": (True, "http-01", None),
    "https-wildcard-cert": (True, "dns-01-wildcard", None),
    "https-with-ipv6": (True, "http-01", "::1"),
}


@pytest.fixture(scope="module", params=VARIANTS)
def sandboxes(request, tmp_path_factory):
    """Per sample host: a sandbox with every agency's vhost (and certs) and its nginx.conf."""
    tls_ready, tls_mode, ipv6 = VARIANTS[request.param]
    settings = dataclasses.replace(INVENTORY.settings, tls_mode=tls_mode)
    root = tmp_path_factory.mktemp(request.param)
    hosts = []
    for index, (name, original) in enumerate(sorted(INVENTORY.hosts.items())):
        host = dataclasses.replace(sandbox_host(original, root / name, f"{TEST_NET}.{20 + index}"),
                                   public_ipv6=ipv6)
        agencies = [a for a in INVENTORY.agencies.values() if a.host == name]
        assert agencies, f"no sample agency on {name}"
        for agency in agencies:
            if tls_ready:
                cert = site.cert_paths(agency, host, settings)
                if not cert.fullchain.exists():
                    names = [f"*.{settings.zone}"] if tls_mode == "dns-01-wildcard" else [agency.fqdn]
                    write_self_signed_cert(names, cert.fullchain, cert.key)
            site.vhost_path(agency, host).write_bytes(
                site.render_vhost(agency, host, settings, tls_ready=tls_ready))
        write_main_conf(host)
        hosts.append((host, agencies))
    return hosts


def test_every_vhost_passes_nginx_t(sandboxes):
    for host, agencies in sandboxes:
        assert len(list(host.nginx_sites_dir.glob("*.conf"))) == len(agencies)
        result = nginx_test(host)
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr


def gixy_findings(conf: Path) -> list[str]:
    """gixy's findings of medium severity or above, one line each."""
    result = subprocess.run([str(GIXY), "-f", "json", str(conf)],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip(), f"gixy printed no report: {result.stderr}"
    return [f"{i['severity']} {i['plugin']} {i['file']}:{i['line']}: {i['summary']}"
            for i in json.loads(result.stdout) if i["severity"] in ("MEDIUM", "HIGH")]


def test_gixy_finds_nothing_of_medium_severity_or_above(sandboxes):
    for host, _ in sandboxes:
        findings = gixy_findings(host.nginx_main_config)
        assert not findings, "\n".join(findings)


@pytest.fixture
def one_vhost_spoiled(sandboxes):
    """A function spoil(old, new) -> (host, vhost path) that edits one vhost; restored after."""
    host, agencies = sandboxes[0]
    path = site.vhost_path(agencies[0], host)
    original = path.read_bytes()

    def spoil(old: bytes, new: bytes) -> tuple:
        assert old in original
        path.write_bytes(original.replace(old, new, 1))
        return host, path

    yield spoil
    path.write_bytes(original)


def test_nginx_t_really_checks_the_rendered_files(one_vhost_spoiled):
    host, _ = one_vhost_spoiled(b"server_name", b"server_nme")
    assert nginx_test(host).returncode != 0


def test_gixy_really_reads_the_rendered_files(one_vhost_spoiled):
    """An add_header in a location drops the server's security headers: gixy must say so."""
    host, path = one_vhost_spoiled(b"    location ~ /\\. {",
                                   b"    location /x { add_header X-Test 1; }\n    location ~ /\\. {")
    assert any(str(path) in finding for finding in gixy_findings(host.nginx_main_config))


# --------------------------------------------------------------------------- served over TLS

@pytest.fixture(scope="module")
def served_with_tls(tmp_path_factory):
    """One agency's site behind its TLS-ready vhost, served by a real nginx; stopped at the end."""
    agency = INVENTORY.agencies["dinkes"]
    host = sandbox_host(INVENTORY.hosts[agency.host], tmp_path_factory.mktemp("tls-nginx"),
                        f"{TEST_NET}.41")
    cert = site.cert_paths(agency, host, INVENTORY.settings)
    write_self_signed_cert([agency.fqdn], cert.fullchain, cert.key)
    site.write_files(site.render_site(agency), site.site_dir(agency, host))
    site.vhost_path(agency, host).write_bytes(
        site.render_vhost(agency, host, INVENTORY.settings, tls_ready=True))
    write_main_conf(host)
    nginx = RunningNginx(host, port=443)
    try:
        yield agency, host, cert
    finally:
        nginx.stop()


def https_get(host, agency, cert, path: str, **tls) -> tuple[str, str, str]:
    """(TLS version, response head, body) of GET path over TLS with SNI = the agency's name."""
    context = ssl.create_default_context(cafile=str(cert.fullchain))
    if "maximum_version" in tls:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = tls["maximum_version"]
        context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection((host.public_ipv4, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=agency.fqdn) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {agency.fqdn}\r\n"
                     "Connection: close\r\n\r\n".encode())
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
        head, _, body = response.decode().partition("\r\n\r\n")
        return conn.version(), head.lower(), body


def test_http_redirects_to_https_but_answers_acme_challenges(served_with_tls):
    agency, host, _ = served_with_tls
    token = "tok-" + agency.slug
    challenge_dir = site.acme_challenge_dir(host)
    challenge_dir.mkdir(parents=True)
    (challenge_dir / token).write_text("key-authorization")
    base = f"http://{host.public_ipv4}"
    headers = {"Host": agency.fqdn}
    redirect = httpx.get(f"{base}/layanan/x.html?a=1", headers=headers, timeout=10)
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"https://{agency.fqdn}/layanan/x.html?a=1"
    answer = httpx.get(f"{base}/.well-known/acme-challenge/{token}", headers=headers, timeout=10)
    assert (answer.status_code, answer.text) == (200, "key-authorization")


def test_https_serves_the_site_with_modern_tls_and_security_headers(served_with_tls):
    agency, host, cert = served_with_tls
    version, head, body = https_get(host, agency, cert, "/")
    assert version in ("TLSv1.2", "TLSv1.3")
    assert head.startswith("http/1.1 200")
    assert "strict-transport-security: max-age=63072000" in head
    for header in ("x-content-type-options: nosniff", "referrer-policy:", "x-frame-options: deny",
                   "content-security-policy: default-src 'self'"):
        assert header in head, header
    assert f"<h1>{agency.name}</h1>" in body
    _, manifest_head, _ = https_get(host, agency, cert, "/" + site.MANIFEST_PATH)
    assert manifest_head.startswith("http/1.1 404")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_https_refuses_tls_1_1(served_with_tls):
    """The client offers TLS 1.1 (security level 0 allows it), so only nginx can refuse."""
    agency, host, cert = served_with_tls
    with pytest.raises(ssl.SSLError):
        https_get(host, agency, cert, "/", maximum_version=ssl.TLSVersion.TLSv1_1)


def test_a_symlink_an_agency_planted_to_another_users_file_is_not_served(served_with_tls):
    """The agency's content user (here: nobody) links to a file it does not own."""
    agency, host, cert = served_with_tls
    site_dir = site.site_dir(agency, host)
    secret = site_dir.parent.parent / "rahasia.txt"  # outside the web root, owned by root
    secret.write_text("kata sandi basis data\n")
    secret.chmod(0o644)
    planted = {"bocor.txt": secret, "layanan/bocor.txt": secret}
    own = site_dir / "milik-sendiri.txt"
    own.write_text("halaman biasa\n")
    os.chown(own, NOBODY, NOBODY)
    planted["tautan-sendiri.txt"] = own
    for name, target in planted.items():
        (site_dir / name).symlink_to(target)
        os.lchown(site_dir / name, NOBODY, NOBODY)

    answers = {name: https_get(host, agency, cert, "/" + name) for name in planted}

    for name in ("bocor.txt", "layanan/bocor.txt"):
        head, body = answers[name][1], answers[name][2]
        assert head.split()[1] in ("403", "404"), (name, head)
        assert "kata sandi" not in body
    head, body = answers["tautan-sendiri.txt"][1:]
    assert head.startswith("http/1.1 200") and body == "halaman biasa\n"
    assert https_get(host, agency, cert, "/")[1].startswith("http/1.1 200")
