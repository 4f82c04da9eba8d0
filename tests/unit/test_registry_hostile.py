"""Random and hostile input in every registry field: never a traceback, always exit 0 or 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import SAMPLE, run_cli, tree_digest

HOSTILE = [
    "", " ", "\x00", "a\nb", "a;b", "{", "}", "'", '"', "`id`", "$(reboot)", "../../etc/passwd",
    "<script>alert(1)</script>", "a" * 300, "-", "xn--", "*", "web1; rm -rf /", "ä", "\u202e",
    "\r\n", "server { }", "127.0.0.1", "https://a.go.id/\"", "\\", "%00", "{{ state_dir }}",
    "{{ lookup('pipe','id') }}",
]

scalars = st.one_of(
    st.sampled_from(HOSTILE), st.text(max_size=80), st.integers(), st.floats(allow_nan=True),
    st.booleans(), st.none(),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=6)


def agency_field_paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from agency_field_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield (*prefix, i)
            yield from agency_field_paths(value, (*prefix, i))


SAMPLE_AGENCY = yaml.safe_load((SAMPLE / "agencies/dinkes.yml").read_text(encoding="utf-8"))
AGENCY_PATHS = sorted(agency_field_paths(SAMPLE_AGENCY), key=str)
SAMPLE_HOSTS = yaml.safe_load((SAMPLE / "hosts.yml").read_text(encoding="utf-8"))
SAMPLE_SETTINGS = yaml.safe_load((SAMPLE / "group_vars/all.yml").read_text(encoding="utf-8"))
HOST_KEYS = sorted(SAMPLE_HOSTS["all"]["children"]["webservers"]["hosts"]["web1"])
SETTING_KEYS = sorted(SAMPLE_SETTINGS)


def set_path(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def make_inventory(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "agencies").mkdir(parents=True)
    shutil.copytree(SAMPLE / "group_vars", root / "group_vars")
    shutil.copy(SAMPLE / "hosts.yml", root / "hosts.yml")
    return root


def check_never_crashes(root: Path) -> None:
    before = tree_digest(root)
    for command in (["registry", "check"], ["registry", "list", "--format", "json"]):
        result = run_cli("--inventory", str(root), "--state-dir", str(root.parent / "state"),
                         *command)
        assert result.exception is None, repr(result.exception)
        assert result.exit_code in (0, 2), result.stderr
        if result.exit_code == 2:
            assert result.stderr.startswith("error: "), result.stderr
    assert tree_digest(root) == before
    assert not (root.parent / "state").exists()


PROFILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROFILE
@given(path=st.sampled_from(AGENCY_PATHS), value=values)
def test_hostile_agency_field(tmp_path_factory, path, value):
    root = make_inventory(tmp_path_factory.mktemp("inv") / "inventory")
    data = yaml.safe_load(yaml.safe_dump(SAMPLE_AGENCY))
    set_path(data, path, value)
    (root / "agencies/dinkes.yml").write_text(yaml.safe_dump(data, allow_unicode=True),
                                              encoding="utf-8")
    check_never_crashes(root)


@PROFILE
@given(key=st.sampled_from(HOST_KEYS), value=values)
def test_hostile_host_var(tmp_path_factory, key, value):
    root = make_inventory(tmp_path_factory.mktemp("inv") / "inventory")
    shutil.copy(SAMPLE / "agencies/dinkes.yml", root / "agencies/dinkes.yml")
    hosts = yaml.safe_load(yaml.safe_dump(SAMPLE_HOSTS))
    hosts["all"]["children"]["webservers"]["hosts"]["web1"][key] = value
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts, allow_unicode=True), encoding="utf-8")
    check_never_crashes(root)


@PROFILE
@given(key=st.sampled_from(SETTING_KEYS), value=values)
def test_hostile_setting(tmp_path_factory, key, value):
    root = make_inventory(tmp_path_factory.mktemp("inv") / "inventory")
    shutil.copy(SAMPLE / "agencies/dinkes.yml", root / "agencies/dinkes.yml")
    data = dict(SAMPLE_SETTINGS, **{key: value})
    (root / "group_vars/all.yml").write_text(yaml.safe_dump(data, allow_unicode=True),
                                             encoding="utf-8")
    check_never_crashes(root)


@PROFILE
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_as_agency_file(tmp_path_factory, content):
    root = make_inventory(tmp_path_factory.mktemp("inv") / "inventory")
    (root / "agencies/dinkes.yml").write_bytes(content)
    check_never_crashes(root)
