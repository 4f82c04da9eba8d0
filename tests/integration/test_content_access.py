"""Agencies' chrooted SFTP on a real lab (issue 17, item 1).

The module brings up its own lab (offset 185 inside PROVISIONER_TEST_NET), lists a key
under one agency's content_access, onboards it and a neighbour on web3 (the
production-shaped host: Debian's paths in its mount namespace, a sudo login), then logs
in as that agency with paramiko against the host's real sshd. Keys are generated here.
Tests run in file order and build on the earlier ones' state.
"""

from __future__ import annotations

import http.client
import io
import pwd
import socket
import ssl
import subprocess
from pathlib import Path, PurePosixPath

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from provisioner.errors import HostError
from provisioner.hosts.agent import HostClient
from provisioner.lifecycle import access
from provisioner.lifecycle import archive as archiving
from provisioner.site import render as site

from .conftest import TEST_NET, start_test_lab
from .faultkit import FaultLab

SLUG, NEIGHBOUR = "kec-batu-engau", "kec-tanah-grogot"  # both on web3
ACCOUNT = access.derived_account(SLUG)
PAGE = b"<!doctype html><title>Halo</title><p>Jadwal posyandu diperbarui.</p>\n"


def new_key() -> tuple[paramiko.PKey, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    public = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), \
        f"{public.decode()} operator@{SLUG}"


class Sftp:
    """The lab's web3 and the account's requests to it."""

    def __init__(self, fault_lab: FaultLab):
        self.lab = fault_lab
        inventory = fault_lab.inventory
        self.host = inventory.hosts["web3"]
        self.known_hosts = inventory.settings.known_hosts_file
        self.sshd = self.host.sshd
        self.key, self.key_line = new_key()

    def set_keys(self, *key_lines: str) -> None:
        """The agency file's content_access block (left out when no key is given)."""
        path = self.lab.lab.inventory_dir / "agencies" / f"{SLUG}.yml"
        text = path.read_text().split("\ncontent_access:")[0].rstrip("\n") + "\n"
        if key_lines:
            text += "content_access:\n  keys:\n" + "".join(f"    - {line}\n"
                                                          for line in key_lines)
        path.write_text(text)

    def access_changes(self) -> list[dict]:
        code, out = self.lab.json("plan", SLUG)
        assert code == 0, out
        return [c for c in out["changes"] if c["kind"] == "access"]

    def onboard(self) -> dict:
        code, out = self.lab.json("onboard", SLUG, "--yes")
        assert code == 0, out["outcomes"]
        return out

    def account(self, *key_lines: str) -> access.SftpAccount:
        agency = self.lab.inventory.agencies[SLUG]
        keys = tuple(access.parse_public_key(line) for line in key_lines)
        return access.SftpAccount(SLUG, ACCOUNT, PurePosixPath(site.site_dir(agency,
                                                                             self.host)), keys)

    def converge(self, accounts, removed=()) -> dict:
        request = access.converge_request(accounts, removed, PurePosixPath(self.host.web_root),
                                          self.sshd, site.MANIFEST_PATH)
        with HostClient(self.host, self.known_hosts) as client:
            return client.content_access(request)

    def connect(self, key: paramiko.PKey | None = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.host.ssh_address, self.host.ssh_port, username=ACCOUNT,
                       pkey=key or self.key, allow_agent=False, look_for_keys=False,
                       timeout=10)
        return client

    def https_get(self, path: str) -> tuple[int, bytes]:
        agency = self.lab.inventory.agencies[SLUG]
        context = ssl.create_default_context(
            cafile=str(self.lab.inventory.settings.trust_roots[0]))
        with socket.create_connection((self.host.public_ipv4, 443), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=agency.fqdn) as tls_sock:
            conn = http.client.HTTPConnection(agency.fqdn)
            conn.sock = tls_sock
            conn.request("GET", path, headers={"Host": agency.fqdn})
            response = conn.getresponse()
            return response.status, response.read()


@pytest.fixture(scope="module")
def sftp(tmp_path_factory: pytest.TempPathFactory):
    test_lab = start_test_lab(tmp_path_factory.mktemp("access"), TEST_NET, offset=185)
    helper = None
    try:
        fault_lab = FaultLab(test_lab)
        helper = Sftp(fault_lab)
        helper.set_keys(helper.key_line)
        code, out = fault_lab.json("onboard", SLUG, NEIGHBOUR, "--yes")
        assert code == 0, out["outcomes"]
        assert [(o["agency"], o["status"]) for o in out["outcomes"]
                if o["kind"] == "access"] == [(SLUG, "changed")]
        yield helper
    finally:
        if helper is not None and _exists(ACCOUNT):
            helper.converge([], [helper.account()])
        test_lab.lab.down()


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_the_account_has_no_shell_is_recorded_and_a_rerun_changes_nothing(sftp: Sftp):
    user = pwd.getpwnam(ACCOUNT)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_dir == "/"
    assert access.load_accounts(sftp.lab.lab.state_dir) == {
        SLUG: access.Recorded(ACCOUNT, "web3")}
    assert sftp.access_changes() == []
    out = sftp.onboard()
    assert not [o for o in out["outcomes"] if o["kind"] == "access"]
    again = sftp.converge([sftp.account(sftp.key_line)])
    assert again == {"created": [], "keys_changed": [], "removed": [],
                     "drop_in_changed": False, "error": None}


def test_access_tells_the_agency_how_to_connect(sftp: Sftp):
    code, info = sftp.lab.json("access", SLUG)
    assert code == 0
    host_keys = access.host_key_fingerprints(sftp.known_hosts, sftp.host.ssh_address,
                                             sftp.host.ssh_port)
    assert host_keys and info["host_key_fingerprints"] == host_keys
    assert (info["host"], info["port"], info["user"]) == ("web3.paserkab.go.id",
                                                          sftp.host.ssh_port, ACCOUNT)
    text = sftp.lab.cli("access", SLUG).stdout
    assert f"Pengguna : {ACCOUNT}" in text and host_keys[0] in text
    refused = sftp.lab.cli("access", NEIGHBOUR)
    assert refused.exit_code == 2 and "content_access" in refused.stderr


def test_an_uploaded_page_is_served_over_https(sftp: Sftp):
    with sftp.connect() as client, client.open_sftp() as channel:
        with channel.open(f"/{access.UPLOAD_FOLDER}/halo.html", "wb") as remote:
            remote.write(PAGE)
        # The starter pages are the agency's to edit; the top folder is root's (chroot).
        with channel.open("/index.html", "ab") as remote:
            remote.write(b"<!-- disunting -->\n")
        with pytest.raises(PermissionError):
            channel.open("/baru.html", "wb")
    assert sftp.https_get(f"/{access.UPLOAD_FOLDER}/halo.html") == (200, PAGE)
    status, body = sftp.https_get("/")
    assert status == 200 and body.endswith(b"<!-- disunting -->\n")


def test_pages_onboarding_rewrites_stay_the_agencys_to_edit(sftp: Sftp):
    path = sftp.lab.lab.inventory_dir / "agencies" / f"{SLUG}.yml"
    data = yaml.safe_load(path.read_text())
    data["services"][0]["biaya"] = "Tidak dipungut biaya (diperbarui)"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    out = sftp.onboard()
    assert any(o["kind"] == "web" and o["status"] == "changed" for o in out["outcomes"])
    agency = sftp.lab.inventory.agencies[SLUG]
    local = sftp.lab.lab.lab.local(sftp.host, site.site_dir(agency, sftp.host))
    account = pwd.getpwnam(ACCOUNT)
    assert (local.stat().st_uid, local.stat().st_mode & 0o777) == (0, 0o755)  # the chroot
    owners = {str(p.relative_to(local)): p.lstat().st_uid for p in local.rglob("*")}
    assert owners.pop(site.MANIFEST_PATH) == 0
    assert set(owners.values()) == {account.pw_uid}, owners


def test_the_chroot_cannot_be_left_and_the_neighbour_is_out_of_sight(sftp: Sftp):
    with sftp.connect() as client, client.open_sftp() as channel:
        assert channel.normalize("..") == "/"
        assert channel.normalize("/../..") == "/"
        top = sorted(channel.listdir("/"))
        assert sorted(channel.listdir("/../..")) == top
        assert "index.html" in top and NEIGHBOUR not in top
        with pytest.raises(FileNotFoundError):
            channel.stat(f"/../{NEIGHBOUR}/index.html")
        with pytest.raises(FileNotFoundError):
            channel.stat("/etc/passwd")


def test_no_shell_no_tty_no_forwarding(sftp: Sftp):
    with sftp.connect() as client:
        transport = client.get_transport()
        channel = transport.open_session(timeout=10)
        channel.settimeout(10)
        channel.exec_command("id; cat /etc/passwd")  # sshd runs internal-sftp instead
        channel.shutdown_write()
        output = b"".join(iter(lambda: channel.recv(4096), b""))
        assert b"uid=" not in output and b"root:" not in output
        channel.close()
        tty = transport.open_session(timeout=10)
        with pytest.raises(paramiko.SSHException):
            tty.get_pty()
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", (sftp.host.public_ipv4, 443),
                                   ("127.0.0.1", 0), timeout=10)


def test_no_password_login(sftp: Sftp):
    with socket.create_connection((sftp.host.ssh_address, sftp.host.ssh_port), 10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            with pytest.raises(paramiko.BadAuthenticationType) as refused:
                transport.auth_password(ACCOUNT, "*")
            assert refused.value.allowed_types == ["publickey"]
        finally:
            transport.close()


def test_a_symlink_the_agency_plants_is_not_followed_by_nginx(sftp: Sftp):
    neighbour = sftp.lab.inventory.agencies[NEIGHBOUR]
    outside = site.site_dir(neighbour, sftp.host) / "index.html"
    with sftp.connect() as client, client.open_sftp() as channel:
        channel.symlink(str(outside), f"/{access.UPLOAD_FOLDER}/tetangga.html")
        channel.symlink("/etc/hostname", f"/{access.UPLOAD_FOLDER}/host.html")
    for name in ("tetangga.html", "host.html"):
        status, body = sftp.https_get(f"/{access.UPLOAD_FOLDER}/{name}")
        assert status == 403, (name, body[:200])


def test_another_key_file_than_the_listed_ones_is_refused(sftp: Sftp):
    stranger, _ = new_key()
    with pytest.raises(paramiko.AuthenticationException):
        sftp.connect(stranger)


def test_a_drop_in_sshd_refuses_is_rolled_back(sftp: Sftp):
    broken = access.SftpAccount(SLUG, ACCOUNT, sftp.account().chroot, ())
    request = access.converge_request([broken], [], PurePosixPath(sftp.host.web_root),
                                      sftp.sshd, site.MANIFEST_PATH)
    request["drop_in_text"] += "Match User x\n    NoSuchDirective yes\n"
    with HostClient(sftp.host, sftp.known_hosts) as client, \
            pytest.raises(HostError, match="sshd -t failed"):
        client.content_access(request)
    # The key file went (no key listed) but the previous drop-in is back, sshd unchanged:
    # the account stays chrooted; a key added back lets it in again.
    sftp.converge([sftp.account(sftp.key_line)])
    with sftp.connect() as client, client.open_sftp() as channel:
        assert channel.normalize("..") == "/"


def test_a_host_user_with_the_accounts_name_is_never_taken_over(sftp: Sftp):
    squatter = access.derived_account(NEIGHBOUR)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", squatter],
                   check=True)
    path = sftp.lab.lab.inventory_dir / "agencies" / f"{NEIGHBOUR}.yml"
    before = path.read_text()
    try:
        path.write_text(before + f"content_access:\n  keys:\n    - {sftp.key_line}\n")
        code, out = sftp.lab.json("onboard", NEIGHBOUR, "--yes")
        assert code == 1
        [failed] = [o for o in out["outcomes"] if o["kind"] == "access"]
        assert (failed["agency"], failed["status"]) == ("host web3", "failed")
        assert "not a provisioner SFTP account" in failed["detail"]
        assert pwd.getpwnam(squatter).pw_shell == "/bin/sh"  # untouched
        with sftp.connect() as client, client.open_sftp() as channel:  # the others still work
            assert channel.normalize("..") == "/"
    finally:
        path.write_text(before)
        subprocess.run(["userdel", squatter], check=True)


def test_removing_a_key_from_the_file_refuses_it_at_the_next_login(sftp: Sftp):
    other_key, other_line = new_key()
    sftp.set_keys(other_line)
    [change] = sftp.access_changes()
    assert (change["action"], change["name"]) == ("update", ACCOUNT)
    assert change["old"] == [access.parse_public_key(sftp.key_line).fingerprint]
    sftp.onboard()
    with pytest.raises(paramiko.AuthenticationException):
        sftp.connect()
    with sftp.connect(other_key) as client, client.open_sftp() as channel:
        assert "index.html" in channel.listdir("/")
    assert sftp.access_changes() == []


def test_removing_the_block_deletes_the_account_and_gives_the_site_back(sftp: Sftp):
    sftp.set_keys()
    [change] = sftp.access_changes()
    assert (change["action"], change["name"]) == ("delete", ACCOUNT)
    sftp.onboard()
    assert not _exists(ACCOUNT) and access.load_accounts(sftp.lab.lab.state_dir) == {}
    status, body = sftp.https_get(f"/{access.UPLOAD_FOLDER}/halo.html")
    assert (status, body) == (200, PAGE)  # the agency's content stays served
    with HostClient(sftp.host, sftp.known_hosts) as client:
        facts = client.call("content_access_facts", names=[ACCOUNT],
                            keys_dir=str(sftp.sshd.keys_dir), drop_in=str(sftp.sshd.drop_in))
    assert facts["accounts"][ACCOUNT] == {"exists": False, "keys": None}
    assert "Match User" not in facts["drop_in"]
    assert sftp.access_changes() == []


def test_offboarding_removes_the_account_after_the_archive(sftp: Sftp):
    sftp.set_keys(sftp.key_line)
    sftp.onboard()
    assert _exists(ACCOUNT)
    code, plan = sftp.lab.json("offboard", SLUG, "--dry-run")
    assert code == 0
    assert {"agency": SLUG, "kind": "access", "action": "delete"}.items() <= \
        next(c for c in plan["plan"]["changes"] if c["kind"] == "access").items()
    code, out = sftp.lab.json("offboard", SLUG, "--yes")
    assert code == 0, out
    assert not _exists(ACCOUNT) and access.load_accounts(sftp.lab.lab.state_dir) == {}
    steps = [(o["kind"], o["status"]) for o in out["result"]["outcomes"]]
    assert steps[0] == ("archive", "changed") and ("site", "changed") in steps
    site_step = next(o for o in out["result"]["outcomes"] if o["kind"] == "site")
    assert site_step["detail"].startswith(f"SFTP account {ACCOUNT} removed; deleted ")
    # What the agency uploaded over SFTP is in the archive taken before the account went.
    archived = archiving.load_archive(Path(out["result"]["archive"]))
    assert archived.site_files()[f"{access.UPLOAD_FOLDER}/halo.html"].data == PAGE
