"""The doctor's pure evaluators (provisioner/doctor/checks.py): what was read -> pass/warn/fail."""

from __future__ import annotations

import pytest

from provisioner.doctor import checks

LAB_MAIN = """\
user www-data;
events { worker_connections 512; }
http {
    include /etc/nginx/mime.types;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
    server { listen 443 ssl default_server; ssl_protocols TLSv1 TLSv1.3; }
    include /etc/nginx/sites-enabled/*;
}
"""

DEBIAN_MAIN = """\
user www-data;
worker_processes auto;
events { worker_connections 768; }
http {
    sendfile on;
    # server_tokens off;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE
    ssl_prefer_server_ciphers on;
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
"""


def test_http_level_directives_ignore_server_blocks_and_includes():
    found = checks.http_directives(LAB_MAIN)
    assert found["ssl_protocols"] == ["TLSv1.2", "TLSv1.3"]  # not the server block's
    assert found["server_tokens"] == ["off"]


@pytest.mark.parametrize("config", ["http { ssl_protocols TLSv1.2;", "http { } }", "\"open"])
def test_a_broken_main_config_is_a_value_error(config: str):
    with pytest.raises(ValueError):
        checks.http_directives(config)


@pytest.mark.parametrize("config,version,status,fragment", [
    (LAB_MAIN, (1, 22, 1), "pass", "allows TLSv1.2 TLSv1.3"),
    (DEBIAN_MAIN, (1, 22, 1), "fail", "allows TLSv1 TLSv1.1"),
    ("http { ssl_protocols TLSv1 TLSv1.2; }", (1, 26, 0), "fail", "allows TLSv1 "),
    ("http { ssl_protocols SSLv3 TLSv1.2; }", (1, 26, 0), "fail", "SSLv3"),
    ("http { ssl_protocols TLSv1.3; }", None, "pass", "TLSv1.3"),
    ("http { }", (1, 22, 1), "fail", "nginx 1.22.1 then allows TLSv1 and TLSv1.1"),
    ("http { }", None, "fail", "of unknown version"),
    ("http { }", (1, 23, 4), "pass", "allows TLSv1.2 and TLSv1.3"),
    ("events {}", (1, 25, 0), "pass", "not set"),
])
def test_tls_protocols_at_the_http_level(config, version, status, fragment):
    check = checks.tls_protocols_check("web1", checks.http_directives(config), version)
    assert (check.id, check.target, check.status) == ("nginx_tls_protocols", "web1", status)
    assert fragment in check.detail
    assert bool(check.hint) is (status == "fail")


@pytest.mark.parametrize("config,status", [
    (LAB_MAIN, "pass"), (DEBIAN_MAIN, "warn"), ("http { server_tokens on; }", "warn"),
    ("http { server_tokens build; }", "warn"),
])
def test_server_tokens(config, status):
    assert checks.server_tokens_check("web1", checks.http_directives(config)).status == status


@pytest.mark.parametrize("text,version", [
    ("1.22.1", (1, 22, 1)), ("nginx version: nginx/1.25.3", (1, 25, 3)),
    ("nginx/1.18.0 (Ubuntu)", (1, 18, 0)), (None, None), ("", None), ("nginx", None),
])
def test_nginx_version(text, version):
    assert checks.nginx_version(text) == version


@pytest.mark.parametrize("free,status", [
    (None, "fail"), (50 * 2**20, "fail"), (500 * 2**20, "warn"), (20 * 2**30, "pass"),
])
def test_disk(free, status):
    assert checks.disk_check("web1", "/var/www/agencies", free).status == status


@pytest.mark.parametrize("skew,status,word", [
    (0.2, "pass", "ahead"), (-1.9, "pass", "behind"), (5.0, "warn", "ahead"),
    (-45.0, "warn", "behind"), (61.0, "fail", "ahead"), (-400.0, "fail", "behind"),
])
def test_clock(skew, status, word):
    check = checks.clock_check("web1", skew)
    assert check.status == status and word in check.detail


@pytest.mark.parametrize("serials,status", [
    ({"ns1": 7, "ns2": 7}, "pass"), ({"ns1": 7, "ns2": 6}, "fail"),
    ({"ns1": 7, "ns2": None}, "fail"), ({"ns1": 7}, "pass"),
])
def test_serials(serials, status):
    assert checks.serials_check("paserkab.go.id", serials).status == status


@pytest.mark.parametrize("configured,served,status", [
    (["ns1.paserkab.go.id", "ns2.paserkab.go.id"], ["NS2.paserkab.go.id.", "ns1.paserkab.go.id"],
     "pass"),
    (["ns1.paserkab.go.id"], ["ns1.paserkab.go.id", "ns2.paserkab.go.id"], "fail"),
    (["ns1.paserkab.go.id"], [], "fail"),
])
def test_ns_set(configured, served, status):
    assert checks.ns_set_check("paserkab.go.id", configured, served).status == status


@pytest.mark.parametrize("delegated,status", [
    (None, "skip"), (["ns1.paserkab.go.id", "ns2.paserkab.go.id"], "pass"),
    (["ns1.paserkab.go.id", "old.example.net"], "fail"), ([], "fail"),
])
def test_parent(delegated, status):
    check = checks.parent_check("paserkab.go.id", ["ns1.paserkab.go.id", "ns2.paserkab.go.id"],
                                delegated, "go.id")
    assert check.status == status


@pytest.mark.parametrize("records,identity,wildcard,status", [
    ([], "letsencrypt.org", False, "pass"),
    ([], None, False, "pass"),
    (['0 issue "letsencrypt.org"'], "letsencrypt.org", False, "pass"),
    (['0 issue "LetsEncrypt.org; validationmethods=http-01"'], "letsencrypt.org", False, "pass"),
    (['0 issue "sectigo.com"'], "letsencrypt.org", False, "fail"),
    (['0 issue ";"'], "letsencrypt.org", False, "fail"),  # no CA may issue
    (['0 issue "sectigo.com"'], None, False, "warn"),
    (['0 iodef "mailto:x@paserkab.go.id"'], "letsencrypt.org", False, "pass"),
    (['0 issue "letsencrypt.org"', '0 issuewild "sectigo.com"'], "letsencrypt.org", True,
     "fail"),
    (['0 issue "letsencrypt.org"', '0 issuewild "sectigo.com"'], "letsencrypt.org", False,
     "pass"),
    (['0 issue "letsencrypt.org"'], "letsencrypt.org", True, "pass"),
])
def test_caa(records, identity, wildcard, status):
    assert checks.caa_check("paserkab.go.id", records, identity, wildcard).status == status


@pytest.mark.parametrize("directory,lab,status,fragment", [
    ("https://acme-staging-v02.api.letsencrypt.org/directory", False, "warn", "STAGING"),
    ("https://acme-v02.api.letsencrypt.org/directory", False, "pass", "PRODUCTION"),
    ("https://127.0.0.30:14000/dir", True, "pass", "Pebble"),
    ("https://acme.example.net/directory", False, "warn", "cannot tell"),
])
def test_environment_said_plainly(directory, lab, status, fragment):
    check = checks.environment_check(directory, lab)
    assert check.status == status and fragment in check.detail


def test_caa_identity_defaults_to_lets_encrypt_for_its_urls():
    assert checks.caa_identity("https://acme-v02.api.letsencrypt.org/directory", None) == \
        "letsencrypt.org"
    assert checks.caa_identity("https://127.0.0.30:14000/dir", None) is None
    assert checks.caa_identity("https://127.0.0.30:14000/dir", "pebble.test") == "pebble.test"


def test_report_fails_only_on_a_fail():
    passing = checks.Check("ssh", "web1", "pass", "ok")
    warned = checks.Check("disk", "web1", "warn", "low", "free space")
    assert not checks.DoctorReport((passing, warned)).failed
    report = checks.DoctorReport((passing, checks.Check("ports", "web1", "fail", "closed", "x")))
    assert report.failed and report.to_dict()["counts"] == {"pass": 1, "warn": 0, "fail": 1,
                                                            "skip": 0}
    with pytest.raises(ValueError):
        checks.Check("ssh", "web1", "ok", "")
