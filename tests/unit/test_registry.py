"""Every rejection rule of `registry check`: exact file, field, exit code, and nothing changed."""

from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable

import pytest

from provisioner.registry import load as registry
from provisioner.registry.fields import is_hostname

from .conftest import SAMPLE, SampleInventory, run_cli, tree_digest

Mutator = Callable[[SampleInventory], Path]


def set_agency(slug: str, keypath: tuple, value: Any) -> Mutator:
    def mutate(inv: SampleInventory) -> Path:
        data = inv.read(f"agencies/{slug}.yml")
        target = data
        for key in keypath[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[keypath[-1]]
        else:
            target[keypath[-1]] = value
        return inv.write(f"agencies/{slug}.yml", data)
    return mutate


def set_host_var(host: str, key: str, value: Any) -> Mutator:
    def mutate(inv: SampleInventory) -> Path:
        data = inv.read("hosts.yml")
        data["all"]["children"]["webservers"]["hosts"][host][key] = value
        return inv.write("hosts.yml", data)
    return mutate


def set_setting(key: str, value: Any) -> Mutator:
    def mutate(inv: SampleInventory) -> Path:
        data = inv.read("group_vars/all.yml")
        data[key] = value
        return inv.write("group_vars/all.yml", data)
    return mutate


def write_raw(rel: str, content: bytes) -> Mutator:
    def mutate(inv: SampleInventory) -> Path:
        path = inv.root / rel
        path.write_bytes(content)
        return path
    return mutate


_DELETE = object()
LONG_ZONE = ".".join(["a" * 60] * 3) + ".abcdefghij.go.id"  # 199 characters: valid alone

# (id, mutation, file (relative to the inventory), field, message fragment)
REJECTIONS: list[tuple[str, Mutator, str, str, str]] = [
    ("slug-not-label", set_agency("dinkes", ("slug",), "Dinkes!"),
     "agencies/dinkes.yml", "slug", "not a valid DNS label"),
    ("slug-leading-hyphen", set_agency("dinkes", ("slug",), "-dinkes"),
     "agencies/dinkes.yml", "slug", "not a valid DNS label"),
    ("slug-64-chars", set_agency("dinkes", ("slug",), "a" * 64),
     "agencies/dinkes.yml", "slug", "not a valid DNS label"),
    ("slug-path-traversal", set_agency("dinkes", ("slug",), "../../etc"),
     "agencies/dinkes.yml", "slug", "not a valid DNS label"),
    ("slug-not-file-name", set_agency("dinkes", ("slug",), "kesehatan"),
     "agencies/dinkes.yml", "slug", "does not match the file name"),
    ("subdomain-trailing-hyphen", set_agency("dinkes", ("subdomain",), "dinkes-"),
     "agencies/dinkes.yml", "subdomain", "not a valid DNS label"),
    ("subdomain-semicolon", set_agency("dinkes", ("subdomain",), "a;b"),
     "agencies/dinkes.yml", "subdomain", "not a valid DNS label"),
    ("subdomain-brace", set_agency("dinkes", ("subdomain",), "a}b"),
     "agencies/dinkes.yml", "subdomain", "not a valid DNS label"),
    ("subdomain-newline", set_agency("dinkes", ("subdomain",), "a\nb"),
     "agencies/dinkes.yml", "subdomain", "not a valid DNS label"),
    ("name-over-253", lambda inv: (set_setting("zone", LONG_ZONE)(inv),
                                   set_agency("dinkes", ("subdomain",), "b" * 63)(inv))[1],
     "agencies/dinkes.yml", "subdomain", "longer than 253"),
    ("name-nul", set_agency("dinkes", ("name",), "Dinas\x00Kesehatan"),
     "agencies/dinkes.yml", "name", "control character"),
    ("name-newline", set_agency("dinkes", ("short_name",), "Din\nkes"),
     "agencies/dinkes.yml", "short_name", "control character or line break"),
    ("external-url-quote", lambda inv: (set_agency("dinkes", ("host",), _DELETE)(inv),
                                        set_agency("dinkes", ("external",),
                                                   'https://x.go.id/"; rm -rf /')(inv))[1],
     "agencies/dinkes.yml", "external", "not a plain http(s) URL"),
    ("host-and-external", set_agency("dinkes", ("external",), "https://dinkes.example.id/"),
     "agencies/dinkes.yml", "host", "exactly one of"),
    ("email-space", set_agency("dinkes", ("email",), "a b@paserkab.go.id"),
     "agencies/dinkes.yml", "email", "not an e-mail address"),
    ("unknown-host", set_agency("dinkes", ("host",), "web9"),
     "agencies/dinkes.yml", "host", "unknown host 'web9'"),
    ("unknown-key-typo", set_agency("dinkes", ("opening_hour",), ["Senin"]),
     "agencies/dinkes.yml", "opening_hour", "unknown key"),
    ("unknown-service-key", set_agency("dinkes", ("services", 0, "persyaratn"), ["KTP"]),
     "agencies/dinkes.yml", "services.0.persyaratn", "unknown key"),
    ("missing-component", set_agency("dinkes", ("services", 0, "biaya"), _DELETE),
     "agencies/dinkes.yml", "services.0.biaya", "missing"),
    ("empty-component", set_agency("dinkes", ("services", 0, "produk"), ""),
     "agencies/dinkes.yml", "services.0.produk", "must not be empty"),
    ("no-services", set_agency("dinkes", ("services",), []),
     "agencies/dinkes.yml", "services", "non-empty list"),
    ("host-path-semicolon", set_host_var("web1", "nginx_sites_dir", "/etc/nginx/sites;evil"),
     "hosts.yml", "web1.nginx_sites_dir", "not a safe absolute path"),
    ("host-path-traversal", set_host_var("web1", "web_root", "/var/www/../../etc"),
     "hosts.yml", "web1.web_root", "not a safe absolute path"),
    ("host-path-relative", set_host_var("web1", "tls_dir", "tls"),
     "hosts.yml", "web1.tls_dir", "not a safe absolute path"),
    ("host-path-space", set_host_var("web1", "log_dir", "/var/log/a b"),
     "hosts.yml", "web1.log_dir", "not a safe absolute path"),
    ("host-unknown-key", set_host_var("web1", "public_ipv5", "1.2.3.4"),
     "hosts.yml", "web1.public_ipv5", "unknown key"),
    ("host-bad-ip", set_host_var("web1", "public_ipv4", "300.1.1.1"),
     "hosts.yml", "web1.public_ipv4", "not an IP address"),
    ("zone-not-hostname", set_setting("zone", "paser kab.go.id"),
     "group_vars/all.yml", "zone", "not a valid DNS name"),
    ("setting-unknown-key", set_setting("tsig_key", "secret"),
     "group_vars/all.yml", "tsig_key", "unknown key"),
    ("tsig-missing", set_setting("tsig_key_file", "/nonexistent/tsig.key"),
     "group_vars/all.yml", "tsig_key_file", "file not found"),
    ("tls-mode-unknown", set_setting("tls_mode", "self-signed"),
     "group_vars/all.yml", "tls_mode", "unknown mode"),
    ("non-utf8", write_raw("agencies/dinkes.yml", b"slug: dinkes\nname: Dinas \xff\n"),
     "agencies/dinkes.yml", "file", "not valid UTF-8"),
    ("non-yaml", write_raw("agencies/dinkes.yml", b"slug: dinkes\nname: [unclosed\n"),
     "agencies/dinkes.yml", "file", "not valid YAML"),
    ("python-tag", write_raw("agencies/dinkes.yml",
                             b"slug: !!python/object/apply:os.system ['true']\n"),
     "agencies/dinkes.yml", "file", "unsupported YAML tag"),
    ("yaml-alias", write_raw("agencies/dinkes.yml", b"a: &x [1]\nb: *x\n"),
     "agencies/dinkes.yml", "file", "aliases"),
    ("not-a-mapping", write_raw("agencies/dinkes.yml", b"- just\n- a list\n"),
     "agencies/dinkes.yml", "file", "must be a mapping"),
    ("wrong-extension", write_raw("agencies/notes.txt", b"hello\n"),
     "agencies/notes.txt", "file", "not a .yml file"),
    ("duplicate-subdomain", set_agency("dkisp", ("subdomain",), "dinkes"),
     "agencies/dkisp.yml", "subdomain", "duplicate subdomain 'dinkes'"),
]


@pytest.mark.parametrize("mutate,rel,field,fragment",
                         [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejection_names_file_field_and_changes_nothing(sample: SampleInventory, mutate: Mutator,
                                                        rel: str, field: str, fragment: str):
    mutate(sample)
    before = tree_digest(sample.root)

    result = sample.cli("registry", "check")

    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.exception is None
    path = str(sample.root / rel)
    matching = [line for line in result.stderr.splitlines()
                if re.match(rf"error: {re.escape(path)}(:\d+)?: {re.escape(field)}: ", line)]
    assert matching, f"no line for {rel} {field} in:\n{result.stderr}"
    assert any(fragment in line for line in matching), result.stderr
    assert tree_digest(sample.root) == before
    assert not sample.state_dir.exists()


def test_problem_lines_carry_the_yaml_line(sample: SampleInventory):
    path = sample.agency_path("dinkes")
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("email:"))
    lines[index] = "email: not-an-email"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = sample.cli("registry", "check")

    assert f"error: {path}:{index + 1}: email: not an e-mail address" in result.stderr


def test_duplicate_slug_across_yml_and_yaml(sample: SampleInventory):
    dup = sample.root / "agencies" / "dinkes.yaml"
    dup.write_bytes(sample.agency_path("dinkes").read_bytes())

    result = sample.cli("registry", "check")

    assert result.exit_code == 2
    original = sample.agency_path("dinkes")
    assert f"error: {original}: slug: duplicate slug 'dinkes' (hint: also in {dup.name})" in result.stderr


def test_tsig_key_readable_by_others_is_refused(sample: SampleInventory, tmp_path: Path):
    key = tmp_path / "tsig.key"
    secret = base64.b64encode(secrets.token_bytes(32)).decode()  # made here, never committed
    key.write_text(f'key "k" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    key.chmod(0o644)
    set_setting("tsig_key_file", str(key))(sample)

    result = sample.cli("registry", "check")

    assert result.exit_code == 2
    assert re.search(r"group_vars/all.yml:\d+: tsig_key_file: .*mode 0644.*chmod 600", result.stderr)
    assert secret not in result.stderr + result.stdout
    key.chmod(0o600)
    assert sample.cli("registry", "check").exit_code == 0


def test_all_problems_are_reported_at_once(sample: SampleInventory):
    set_agency("dinkes", ("email",), "broken")(sample)
    set_agency("dkisp", ("host",), "web7")(sample)
    set_host_var("web2", "web_root", "relative")(sample)

    result = sample.cli("registry", "check")

    assert result.exit_code == 2
    assert "dinkes.yml" in result.stderr and "email" in result.stderr
    assert "dkisp.yml" in result.stderr and "web7" in result.stderr
    assert "hosts.yml" in result.stderr and "web_root" in result.stderr


def test_sample_inventory_passes_and_lists_at_least_30_agencies():
    check = run_cli("--inventory", str(SAMPLE), "registry", "check")
    assert check.exit_code == 0, check.stderr
    listed = run_cli("--inventory", str(SAMPLE), "registry", "list", "--format", "json")
    import json
    rows = json.loads(listed.stdout)
    assert len(rows) >= 30
    assert {"dinkes", "disdukcapil", "dkisp", "setda"} <= {r["slug"] for r in rows}
    assert all(r["sample"] for r in rows)


def test_sample_agencies_have_all_delivery_components():
    inv = registry.load_inventory(SAMPLE)
    for agency in inv.agencies.values():
        assert agency.services, agency.slug
        for service in agency.services:
            assert all(service.components.values()), (agency.slug, service.name)


def test_state_dir_defaults_beside_inventory_and_resolves_paths(sample: SampleInventory):
    inv = registry.load_inventory(sample.root)
    assert inv.state_dir == sample.root.parent / "state"
    assert inv.hosts["web1"].nginx_sites_dir == sample.root.parent / "state/lab/web1/nginx/sites"


def test_inventory_from_environment(sample: SampleInventory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROVISIONER_INVENTORY", str(sample.root))
    result = run_cli("registry", "list", "--format", "json")
    assert result.exit_code == 0
    assert "dinkes" in result.stdout


def test_ensure_state_dir_is_private(tmp_path: Path):
    state = registry.ensure_state_dir(tmp_path / "state")
    assert os.stat(state).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("name,ok", [
    ("dinkes.paserkab.go.id", True), ("a" * 63 + ".id", True), ("a" * 64 + ".id", False),
    ("-a.id", False), ("a-.id", False), ("a_b.id", False), ("", False),
    (".".join(["a" * 50] * 5), False), ("xn--80ak6aa92e.id", True),
])
def test_is_hostname(name: str, ok: bool):
    assert is_hostname(name) is ok
