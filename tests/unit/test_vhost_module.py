"""The host-side module's transaction logic against a real nginx in a tmp dir.

The module (playbooks/library/provisioner_vhosts.py) is imported and its core
function ``apply_bundle`` called directly, with bundles built by
provisioner.hosts.deploy.bundle_bytes, against a real nginx master started here on a
loopback address of this run's prefix (PROVISIONER_TEST_NET) and a free port.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.hosts import hostlib
from provisioner.hosts.agent import host_agent
from provisioner.hosts.deploy import SiteBundle, bundle_bytes
from provisioner.site import render as site

module = host_agent()

ADDRESS = os.environ.get("PROVISIONER_TEST_NET", "127.0.8") + ".250"
NGINX = "/usr/sbin/nginx"


class CountingNginx(module.Nginx):
    """The real nginx wrapper, counting reloads (every call still runs nginx)."""

    reloads = 0

    def reload(self, **settle):
        self.reloads += 1
        return super().reload(**settle)


class Host:
    """A real nginx master with its own config, sites dir and web root in tmp_path."""

    def __init__(self, root: Path):
        self.root = root
        self.web_root = root / "www"
        self.sites_dir = root / "nginx" / "sites"
        self.rejected_dir = root / "nginx" / "rejected"
        self.main_config = root / "nginx" / "nginx.conf"
        self.port = _free_port()
        for d in (self.web_root, self.sites_dir, root / "tmp"):
            d.mkdir(parents=True)
        self.main_config.write_text(f"""
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    include {self.sites_dir}/*.conf;
}}
""")
        subprocess.run([NGINX, "-c", str(self.main_config), "-e", str(root / "error.log")],
                       check=True, capture_output=True)

    def stop(self) -> None:
        """Signal the master by its PID file (``nginx -s`` would refuse a broken config)."""
        pid_file = self.root / "nginx.pid"
        os.kill(int(pid_file.read_text()), signal.SIGQUIT)
        deadline = time.monotonic() + 5
        while pid_file.exists() and time.monotonic() < deadline:  # nginx removes it on exit
            time.sleep(0.02)

    def nginx(self) -> CountingNginx:
        return CountingNginx(NGINX, str(self.main_config))

    def vhost(self, slug: str, extra: str = "") -> bytes:
        return (f"server {{\n    listen {ADDRESS}:{self.port};\n    server_name {slug}.test;\n"
                f"    root {self.web_root / slug};\n{extra}}}\n").encode()

    def bundle(self, slug: str, files: dict[str, bytes], vhost: bytes | None = None) -> SiteBundle:
        files = dict(files)
        files[site.MANIFEST_PATH] = _manifest(slug, files)
        return SiteBundle(slug=slug, host="test", site_dir=self.web_root / slug,
                          vhost_path=self.sites_dir / f"{slug}.conf",
                          vhost=vhost if vhost is not None else self.vhost(slug), files=files)

    def apply(self, bundles: list[SiteBundle], nginx: CountingNginx | None = None) -> dict:
        return module.apply_bundle(bundle_bytes(bundles), str(self.web_root), str(self.sites_dir),
                                   str(self.rejected_dir), nginx or self.nginx(), now=0)

    def get(self, slug: str, path: str = "index.html") -> httpx.Response:
        return httpx.get(f"http://{ADDRESS}:{self.port}/{path}", headers={"Host": f"{slug}.test"},
                         timeout=5)

    def serves(self, slug: str, content: bytes, path: str = "index.html") -> bool:
        """Whether the site answers with ``content`` now: no waiting, since a reload
        returns only once the old workers stopped taking connections."""
        try:
            response = self.get(slug, path)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.content == content

    def master(self) -> int:
        return int((self.root / "nginx.pid").read_text())


def _manifest(slug: str, files: dict[str, bytes]) -> bytes:
    return json.dumps({"schema": site.MANIFEST_SCHEMA, "agency": slug,
                       "files": {p: hashlib.sha256(d).hexdigest()
                                 for p, d in sorted(files.items())}}).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ADDRESS, 0))
        return sock.getsockname()[1]


@pytest.fixture
def host(tmp_path: Path):
    h = Host(tmp_path)
    yield h
    h.stop()


def page(slug: str, version: int = 1) -> dict[str, bytes]:
    return {"index.html": f"<h1>{slug} v{version}</h1>".encode(),
            "layanan/a.html": f"{slug} layanan v{version}".encode()}


BROKEN = "    bogus_directive on;\n"


# --------------------------------------------------------------------------- transaction

def test_a_good_batch_is_applied_with_one_reload(host: Host):
    nginx = host.nginx()
    result = host.apply([host.bundle(s, page(s)) for s in ("a", "b", "c")], nginx)

    assert nginx.reloads == 1 and result["reloaded"]
    assert {s: r["status"] for s, r in result["agencies"].items()} == \
        {"a": "changed", "b": "changed", "c": "changed"}
    assert all(r["vhost"] == "created" for r in result["agencies"].values())
    for slug in ("a", "b", "c"):
        assert host.serves(slug, page(slug)["index.html"])
        assert (host.web_root / slug / site.MANIFEST_PATH).exists()


def test_a_second_identical_run_changes_nothing_and_does_not_reload(host: Host):
    bundles = [host.bundle(s, page(s)) for s in ("a", "b")]
    host.apply(bundles)
    nginx = host.nginx()
    result = host.apply(bundles, nginx)

    assert nginx.reloads == 0 and nginx.tests == 0 and not result["reloaded"]
    assert {r["status"] for r in result["agencies"].values()} == {"ok"}
    assert all(r["vhost"] == "unchanged" and r["files"]["unchanged"] == 3
               for r in result["agencies"].values())


def test_one_bad_vhost_is_rejected_and_the_others_go_live_with_one_reload(host: Host):
    host.apply([host.bundle("old", page("old"))])
    assert host.serves("old", page("old")["index.html"])
    nginx = host.nginx()
    bundles = [host.bundle(s, page(s)) for s in ("a", "b", "d", "e")]
    bundles.insert(2, host.bundle("c", page("c"), host.vhost("c", BROKEN)))
    result = host.apply(bundles, nginx)

    statuses = {s: r["status"] for s, r in result["agencies"].items()}
    assert statuses == {"a": "changed", "b": "changed", "c": "failed", "d": "changed",
                        "e": "changed"}
    bad = result["agencies"]["c"]
    assert bad["vhost"] == "rejected" and "bogus_directive" in bad["reason"]
    assert not (host.sites_dir / "c.conf").exists()
    assert Path(bad["rejected_file"]).read_bytes() == host.vhost("c", BROKEN)
    assert Path(bad["rejected_file"]).parent == host.rejected_dir
    assert nginx.reloads == 1
    for slug in ("old", "a", "b", "d", "e"):
        assert host.serves(slug, page(slug)["index.html"])
    assert subprocess.run([NGINX, "-t", "-c", str(host.main_config)],
                          capture_output=True).returncode == 0


def test_several_bad_vhosts_are_all_found(host: Host):
    bundles = [host.bundle(s, page(s), host.vhost(s, BROKEN if s in "bdg" else ""))
               for s in "abcdefgh"]
    nginx = host.nginx()
    result = host.apply(bundles, nginx)

    failed = sorted(s for s, r in result["agencies"].items() if r["status"] == "failed")
    assert failed == ["b", "d", "g"]
    assert nginx.reloads == 1
    assert sorted(p.stem for p in host.sites_dir.glob("*.conf")) == list("acefh")


def test_a_bad_update_restores_the_previous_vhost_which_keeps_serving(host: Host):
    host.apply([host.bundle("a", page("a")), host.bundle("b", page("b"))])
    before = (host.sites_dir / "a.conf").read_bytes()
    nginx = host.nginx()
    result = host.apply([host.bundle("a", page("a", 2), host.vhost("a", BROKEN)),
                         host.bundle("b", page("b", 2), host.vhost("b", "    index index.html;\n"))],
                        nginx)

    assert result["agencies"]["a"]["status"] == "failed"
    assert (host.sites_dir / "a.conf").read_bytes() == before
    assert result["agencies"]["b"]["status"] == "changed"
    assert nginx.reloads == 1
    assert host.serves("a", page("a", 2)["index.html"])  # new files under the old vhost
    assert host.serves("b", page("b", 2)["index.html"])


def test_only_bad_vhosts_means_no_reload(host: Host):
    nginx = host.nginx()
    result = host.apply([host.bundle("a", page("a"), host.vhost("a", BROKEN))], nginx)

    assert result["agencies"]["a"]["status"] == "failed"
    assert nginx.reloads == 0 and not result["reloaded"]
    assert list(host.sites_dir.iterdir()) == []


def test_a_config_broken_before_the_run_rejects_without_touching_anything(host: Host):
    (host.sites_dir / "someone-else.conf").write_text("server { nonsense; }\n")
    nginx = host.nginx()
    result = host.apply([host.bundle("a", page("a"))], nginx)

    assert result["agencies"]["a"]["status"] == "failed"
    assert "invalid before this change" in result["agencies"]["a"]["reason"]
    assert nginx.reloads == 0
    assert sorted(p.name for p in host.sites_dir.iterdir()) == ["someone-else.conf"]


# --------------------------------------------------------------------------- drift

GARBAGE = b"this line was typed by hand\n"


def test_owned_files_tell_intact_from_drift_from_not_ours():
    ours = site.owned_file(b"server { }\n")
    assert hostlib.owned_state(ours) == "intact"
    assert hostlib.owned_state(ours + GARBAGE) == "drift"
    assert hostlib.owned_state(ours.replace(b"{ }", b"{}")) == "drift"
    assert hostlib.owned_state(b"server { }\n") is None
    assert hostlib.owned_state(None) is None


def test_a_vhost_of_ours_broken_by_hand_is_restored_and_the_edit_kept_aside(host: Host):
    vhost_a, vhost_b = site.owned_file(host.vhost("a")), site.owned_file(host.vhost("b"))
    host.apply([host.bundle("a", page("a"), vhost_a), host.bundle("b", page("b"), vhost_b)])
    with open(host.sites_dir / "a.conf", "ab") as conf:
        conf.write(GARBAGE)
    nginx = host.nginx()
    assert not nginx.test()[0]  # the whole host's config is broken now
    assert module.drifted_vhosts(str(host.sites_dir)) == [str(host.sites_dir / "a.conf")]

    result = host.apply([host.bundle("a", page("a"), vhost_a),
                         host.bundle("b", page("b", 2), vhost_b)], nginx)

    assert result["agencies"]["a"]["status"] == "changed"
    assert result["agencies"]["a"]["vhost"] == "restored"
    kept = Path(result["agencies"]["a"]["drift_file"])
    assert kept.parent == host.rejected_dir and kept.name.startswith("a.conf.drift-")
    assert kept.read_bytes() == vhost_a + GARBAGE and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert (host.sites_dir / "a.conf").read_bytes() == vhost_a
    assert result["agencies"]["b"]["status"] == "changed" and nginx.reloads == 1
    assert host.serves("a", b"<h1>a v1</h1>") and host.serves("b", b"<h1>b v2</h1>")
    assert module.drifted_vhosts(str(host.sites_dir)) == []


def test_a_broken_file_that_is_not_ours_still_refuses_the_host(host: Host):
    vhost_a = site.owned_file(host.vhost("a"))
    host.apply([host.bundle("a", page("a"), vhost_a)])
    (host.sites_dir / "tangan.conf").write_bytes(GARBAGE)

    result = host.apply([host.bundle("a", page("a", 2), site.owned_file(host.vhost("a", "#\n")))])

    assert result["agencies"]["a"]["status"] == "failed"
    assert "invalid before this change" in result["agencies"]["a"]["reason"]
    assert (host.sites_dir / "a.conf").read_bytes() == vhost_a
    assert module.drifted_vhosts(str(host.sites_dir)) == []


def test_preflight_names_the_file_nginx_blames_and_the_drifted_ones(host: Host):
    host.apply([host.bundle("a", page("a"), site.owned_file(host.vhost("a")))])
    with open(host.sites_dir / "a.conf", "ab") as conf:
        conf.write(GARBAGE)

    raw = module.op_preflight({"nginx_binary": NGINX, "nginx_main_config": str(host.main_config),
                               "sites_dir": str(host.sites_dir), "paths": [str(host.root)]})

    assert raw["nginx_test_ok"] is False
    assert raw["nginx_test_file"] == str(host.sites_dir / "a.conf")
    assert raw["drifted"] == [str(host.sites_dir / "a.conf")]


# --------------------------------------------------------------------------- reload

def test_a_reload_returns_once_no_old_worker_takes_connections(host: Host):
    host.apply([host.bundle("a", page("a"))])
    old = module.accepting_workers(host.master())
    (host.web_root / "a" / "index.html").write_bytes(b"v2")

    ok, _output = host.nginx().reload()

    new = module.accepting_workers(host.master())
    assert ok and len(old) == len(new) == 1 and not old & new
    assert all(host.serves("a", b"v2") for _ in range(20))


def test_a_config_the_master_cannot_apply_is_a_failed_reload(host: Host):
    """nginx -t does not bind, so a taken port passes the test and fails in the master,
    which then keeps the old workers: 'nginx -s reload' alone would call that success."""
    host.apply([host.bundle("a", page("a"))])
    old = module.accepting_workers(host.master())
    with socket.socket() as taken:
        taken.bind((ADDRESS, 0))
        taken.listen()
        port = taken.getsockname()[1]
        (host.sites_dir / "b.conf").write_text(
            f"server {{\n    listen {ADDRESS}:{port};\n    server_name b.test;\n}}\n")
        nginx = host.nginx()
        assert nginx.test()[0]

        ok, output = nginx.reload(settle=3.5)

    assert not ok and "kept the old configuration" in output and str(min(old)) in output
    assert module.accepting_workers(host.master()) == old
    assert host.serves("a", page("a")["index.html"])


# --------------------------------------------------------------------------- site files

def test_files_the_agency_edited_are_kept_and_reported(host: Host):
    host.apply([host.bundle("a", page("a"))])
    edited = b"<h1>our own page</h1>"
    (host.web_root / "a" / "index.html").write_bytes(edited)
    result = host.apply([host.bundle("a", page("a", 2))])

    files = result["agencies"]["a"]["files"]
    assert files["kept_edited"] == ["index.html"]
    assert files["updated"] == ["layanan/a.html", site.MANIFEST_PATH]  # the manifest last
    assert (host.web_root / "a" / "index.html").read_bytes() == edited
    # Still kept on the next run: the edit is remembered through the manifest.
    again = host.apply([host.bundle("a", page("a", 3))])
    assert again["agencies"]["a"]["files"]["kept_edited"] == ["index.html"]


def test_files_no_longer_generated_are_removed_unless_edited(host: Host):
    files = {**page("a"), "old.html": b"old", "edited-old.html": b"x"}
    host.apply([host.bundle("a", files)])
    (host.web_root / "a" / "edited-old.html").write_bytes(b"changed by the agency")
    result = host.apply([host.bundle("a", page("a"))])

    report = result["agencies"]["a"]["files"]
    assert report["removed"] == ["old.html"]
    assert report["kept_edited"] == ["edited-old.html"]
    assert not (host.web_root / "a" / "old.html").exists()


def test_a_site_folder_outside_the_web_root_is_refused(host: Host):
    bundle = host.bundle("a", page("a"))
    outside = SiteBundle(slug="a", host="test", site_dir=host.root / "elsewhere",
                         vhost_path=bundle.vhost_path, vhost=bundle.vhost, files=bundle.files)
    with pytest.raises(ValueError, match="not inside"):
        host.apply([outside])
    assert not (host.root / "elsewhere").exists()


def test_a_symlinked_subfolder_cannot_redirect_writes(host: Host, tmp_path: Path):
    host.apply([host.bundle("a", page("a"))])
    target = tmp_path / "target"
    target.mkdir()
    (host.web_root / "a" / "layanan" / "a.html").unlink()
    (host.web_root / "a" / "layanan").rmdir()
    (host.web_root / "a" / "layanan").symlink_to(target)
    result = host.apply([host.bundle("a", page("a", 2))])

    assert result["agencies"]["a"]["status"] == "failed"
    assert list(target.iterdir()) == []


# --------------------------------------------------------------------------- symlinks and races
#
# An agency writes into its own site folder. Each test plants what a hostile agency
# could (a symlink, a hard link), some of them at the worst moment: ``race`` swaps a
# folder for a symlink to a folder outside just before the agent opens a given file.


@pytest.fixture
def race(monkeypatch):
    """race(folder, outside, when): swap ``folder`` for a symlink to ``outside`` the first
    time anything opens a name ``when(name)`` holds for (the attacker wins the race)."""
    real_open = os.open

    def arm(folder: Path, outside: Path, when):
        fired = []

        def racing_open(path, flags, *args, **kwargs):
            if not fired and when(os.path.basename(path)):
                fired.append(path)
                folder.rename(folder.with_name(folder.name + ".real"))
                folder.symlink_to(outside)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", racing_open)
        return fired
    return arm


def test_a_folder_swapped_for_a_symlink_mid_write_cannot_redirect_root(host: Host, tmp_path,
                                                                       race):
    host.apply([host.bundle("a", page("a"))])
    outside = tmp_path / "outside"
    outside.mkdir()
    fired = race(host.web_root / "a" / "layanan", outside,
                 lambda name: name.startswith(".a.html."))  # the temp file of layanan/a.html

    result = host.apply([host.bundle("a", page("a", 2))])

    assert fired, "the race never happened"
    assert list(outside.iterdir()) == []
    assert result["agencies"]["a"]["files"]["updated"] == ["index.html", "layanan/a.html",
                                                          site.MANIFEST_PATH]
    assert (host.web_root / "a" / "layanan.real" / "a.html").read_bytes() == b"a layanan v2"


def test_a_hard_link_planted_at_a_temp_name_is_never_written_through(host: Host, tmp_path):
    host.apply([host.bundle("a", page("a"))])
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not the agency's")
    site_dir = host.web_root / "a"
    for name in (".index.html.provisioner-tmp", ".index.html.tmp"):  # any guessable name
        os.link(victim, site_dir / name)

    host.apply([host.bundle("a", page("a", 2))])

    assert victim.read_bytes() == b"not the agency's"
    assert (site_dir / "index.html").read_bytes() == b"<h1>a v2</h1>"


def test_a_fifo_in_a_site_does_not_hang_the_agent(host: Host):
    host.apply([host.bundle("a", page("a"))])
    (host.web_root / "a" / "index.html").unlink()
    os.mkfifo(host.web_root / "a" / "index.html")

    state = module.site_state(str(host.web_root / "a"), str(host.web_root), ["index.html"],
                              site.MANIFEST_PATH)
    snap = module.site_snapshot(str(host.web_root / "a"), str(host.web_root),
                                str(host.sites_dir / "a.conf"), True)

    assert "index.html" not in state[1]
    assert "index.html" in snap["skipped"]


def test_a_manifest_naming_a_path_outside_the_site_fails_that_agency_only(host: Host):
    host.apply([host.bundle("a", page("a")), host.bundle("b", page("b"))])
    (host.web_root / "a" / site.MANIFEST_PATH).write_text(json.dumps(
        {"schema": site.MANIFEST_SCHEMA, "agency": "a", "files": {"../x": "0" * 64}}))
    request = {"manifest_path": site.MANIFEST_PATH, "web_root": str(host.web_root), "certs": [],
               "agencies": [{"slug": slug, "site_dir": str(host.web_root / slug),
                             "vhost_path": str(host.sites_dir / f"{slug}.conf"),
                             "paths": ["index.html"]} for slug in ("a", "b")]}

    facts = module.op_facts(request)["agencies"]
    result = host.apply([host.bundle("a", page("a", 2)), host.bundle("b", page("b", 2))])

    assert "'../x'" in facts["a"]["error"] and "manifest" in facts["a"]["error"]
    assert facts["b"]["current"]["index.html"] == hashlib.sha256(b"<h1>b v1</h1>").hexdigest()
    assert result["agencies"]["a"]["status"] == "failed"
    assert "'../x'" in result["agencies"]["a"]["reason"]
    assert result["agencies"]["b"]["status"] == "changed"


def _restore_tree(tmp_path: Path, mode: int, folder_mode: int):
    """A site archived with one file of ``mode`` in a folder of ``folder_mode``."""
    site_dir = tmp_path / "www" / "dinkes"
    (site_dir / "bin").mkdir(parents=True)
    (site_dir / "bin" / "tool").write_bytes(b"\x7fELF pretend")
    os.chmod(site_dir / "bin" / "tool", mode)
    os.chmod(site_dir / "bin", folder_mode)
    snap = module.site_snapshot(str(site_dir), str(tmp_path / "www"), str(tmp_path / "x.conf"),
                                True)
    files = [{"path": rel, **f} for rel, f in snap["files"].items()]
    return site_dir, files, snap["dirs"]


@pytest.mark.parametrize("removed_first", [True, False])
def test_restore_never_brings_back_setuid_setgid_or_writable_modes(tmp_path, removed_first):
    site_dir, files, dirs = _restore_tree(tmp_path, 0o6777, 0o3777)
    assert files[0]["mode"] == 0o6777 and dirs["bin"] == 0o3777  # what the archive recorded
    if removed_first:
        module.remove_tree(str(site_dir), str(tmp_path / "www"))

    module.restore_site(str(site_dir), str(tmp_path / "www"), files, dirs)

    assert stat.S_IMODE((site_dir / "bin" / "tool").stat().st_mode) == 0o644
    assert stat.S_IMODE((site_dir / "bin").stat().st_mode) == 0o755
    assert (site_dir / "bin" / "tool").stat().st_mtime == files[0]["mtime"]


def test_restore_sets_modes_and_times_on_the_file_not_through_a_symlink(tmp_path, monkeypatch):
    site_dir, files, dirs = _restore_tree(tmp_path, 0o640, 0o755)
    module.remove_tree(str(site_dir), str(tmp_path / "www"))
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"x")
    victim.chmod(0o600)
    os.utime(victim, (1000, 1000))
    real_replace = os.replace

    def racing_replace(src, dst, **kwargs):  # the agency swaps the new file for a symlink
        real_replace(src, dst, **kwargs)
        where = f"/proc/self/fd/{kwargs['dst_dir_fd']}" if "dst_dir_fd" in kwargs else ""
        target = Path(where, dst)
        target.unlink()
        target.symlink_to(victim)

    monkeypatch.setattr(os, "replace", racing_replace)
    module.restore_site(str(site_dir), str(tmp_path / "www"), files, dirs)

    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert victim.stat().st_mtime == 1000


# --------------------------------------------------------------------------- same rules as site.py

H = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("v1", "v2", "edit")}
M = site.MANIFEST_PATH

PLAN_CASES = [
    # rendered, deployed manifest, current on host
    ({"a": "v1"}, None, {}),
    ({"a": "v1"}, None, {"a": "v1"}),
    ({"a": "v2"}, None, {"a": "v1"}),
    ({"a": "v2"}, {"a": "v1"}, {"a": "v1"}),
    ({"a": "v2"}, {"a": "v1"}, {"a": "edit"}),
    ({"a": "v2"}, {"a": "v1"}, {}),
    ({}, {"a": "v1"}, {"a": "v1"}),
    ({}, {"a": "v1"}, {"a": "edit"}),
    ({}, {"a": "v1"}, {}),
    ({M: "v2"}, {M: "v1"}, {M: "edit"}),
]


def _site_plan(rendered, deployed, current):
    changes = site.plan_site_files({p: v.encode() for p, v in rendered.items()},
                                   {p: H[v] for p, v in deployed.items()} if deployed else None,
                                   {p: H[v] for p, v in current.items()})
    return {c.path: (c.action, c.reason) for c in changes}


def _module_plan(rendered, deployed, current):
    return hostlib.plan_site_files({p: H[v] for p, v in rendered.items()},
                                  {p: H[v] for p, v in deployed.items()} if deployed else None,
                                  {p: H[v] for p, v in current.items()}, M)


@pytest.mark.parametrize("rendered,deployed,current", PLAN_CASES)
def test_the_module_decides_files_exactly_as_site_py(rendered, deployed, current):
    assert _module_plan(rendered, deployed, current) == _site_plan(rendered, deployed, current)


versions = st.sampled_from(sorted(H))
paths = st.sampled_from(["a", "b", M])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(paths, versions), st.none() | st.dictionaries(paths, versions),
       st.dictionaries(paths, versions))
def test_the_module_and_site_py_agree_on_any_input(rendered, deployed, current):
    assert _module_plan(rendered, deployed, current) == _site_plan(rendered, deployed, current)
