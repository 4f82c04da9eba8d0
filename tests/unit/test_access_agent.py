"""The host agent's content-access helpers on a local folder: what the account gets, what
it never gets (symlinked or hard-linked files, the manifest, the chroot itself)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.hosts.agent import host_agent
from provisioner.site import render as site

agent = host_agent()

# No such user is needed: ownership is numeric (the suite runs as root, like the lab).
ACCOUNT_UID = ACCOUNT_GID = 54321


def _site(tmp_path: Path) -> tuple[Path, Path]:
    site_dir = tmp_path / "www" / "dinkes"
    (site_dir / "layanan").mkdir(parents=True)
    (site_dir / "index.html").write_text("<p>halo</p>")
    (site_dir / "layanan" / "izin.html").write_text("<p>izin</p>")
    (site_dir / site.MANIFEST_PATH).write_text("{}")
    outside = tmp_path / "rahasia.txt"
    outside.write_text("root only")
    (site_dir / "tautan.txt").symlink_to(outside)
    os.link(outside, site_dir / "layanan" / "tautan-keras.txt")
    site_dir.chmod(0o775)
    return site_dir, outside


def test_the_contents_go_to_the_account_and_the_chroot_stays_roots(tmp_path):
    site_dir, outside = _site(tmp_path)
    fd = os.open(site_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        agent.hand_over_site(fd, ACCOUNT_UID, ACCOUNT_GID, site.MANIFEST_PATH)
        agent._ensure_upload_folder(fd, "berkas", ACCOUNT_UID, ACCOUNT_GID)
    finally:
        os.close(fd)
    top = site_dir.stat()
    assert (top.st_uid, top.st_mode & 0o777) == (0, 0o755)  # OpenSSH's chroot rule
    for rel in ("index.html", "layanan", "layanan/izin.html", "berkas"):
        assert (site_dir / rel).lstat().st_uid == ACCOUNT_UID, rel
    assert (site_dir / site.MANIFEST_PATH).stat().st_uid == 0
    # Neither what a symlink points at nor a file with another hard link is handed over.
    assert outside.stat().st_uid == 0
    assert (site_dir / "layanan" / "tautan-keras.txt").stat().st_uid == 0

    fd = os.open(site_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        agent.hand_over_site(fd, 0, 0, site.MANIFEST_PATH)  # the account removed
    finally:
        os.close(fd)
    assert {p.lstat().st_uid for p in site_dir.rglob("*") if not p.is_symlink()} == {0}


@pytest.mark.parametrize("name", ["Root", "1abc", "a" * 33, "web dinkes", "-x", "a;b", None])
def test_only_a_valid_account_name_reaches_a_command_line(name):
    with pytest.raises(ValueError, match="invalid account name"):
        agent._checked_account(name)


def test_a_user_provisioner_did_not_create_is_never_taken_over():
    with pytest.raises(ValueError, match="not a provisioner SFTP account"):
        agent._sftp_user("root")
    assert agent._sftp_user("web-no-such-agency-here") is None
