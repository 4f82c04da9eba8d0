"""Every rendered vhost passes the real ``nginx -t`` and gixy (no medium or high finding).

No lab needed: the vhosts of all sample agencies are rendered for sandbox copies of
their hosts (tmp folders, addresses on PROVISIONER_TEST_NET), with throwaway
self-signed ECDSA certificates where TLS is on.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import site
from provisioner.registry import load_inventory

from .conftest import SAMPLE_INVENTORY, TEST_NET
from .nginx_sandbox import nginx_test, sandbox_host, write_main_conf, write_self_signed_cert

GIXY = Path(sys.executable).with_name("gixy")
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
