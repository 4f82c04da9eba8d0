"""Content access (issue 17, item 1): key validation, account names, the sshd drop-in,
the keys file and the agency's instructions. Keys are generated at run time."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provisioner.lifecycle import access


def public_line(key, comment: str = "operator@dinkes") -> str:
    line = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line


@pytest.fixture(scope="module")
def ed_line() -> str:
    return public_line(ed25519.Ed25519PrivateKey.generate())


def test_ed25519_and_ecdsa_keys_are_accepted_canonically(ed_line):
    key = access.parse_public_key(ed_line)
    assert key.key_type == "ssh-ed25519" and key.comment == "operator@dinkes"
    assert key.line == ed_line
    ecdsa = access.parse_public_key(public_line(ec.generate_private_key(ec.SECP256R1()), ""))
    assert ecdsa.key_type == "ecdsa-sha2-nistp256" and ecdsa.comment == ""


@pytest.mark.parametrize("mangle, message", [
    (lambda line: f'command="/bin/sh" {line}', "not allowed"),
    (lambda line: f"from=\"10.0.0.1\" {line}", "not allowed"),
    (lambda line: line.replace(" operator", "\noperator"), "one line"),
    (lambda line: line + "\r", "one line"),
    (lambda line: line.replace("ssh-ed25519", "ssh-dss"), "not allowed"),
    (lambda line: line.replace("ssh-ed25519", "ecdsa-sha2-nistp256"), "not a ecdsa"),
    (lambda line: line.replace("AAAA", "AA!A", 1), "not base64"),
    (lambda line: line.split()[0] + " " + line.split()[1][:-8] + " x", "not a valid"),
    (lambda line: line + " second-comment", "TYPE BASE64"),
    (lambda line: line.split()[0], "TYPE BASE64"),
    (lambda line: line.replace("operator@dinkes", "op\x1b[31m"), "comment"),
    (lambda line: line + "x" * 9000, "8 KiB"),
])
def test_bad_key_lines_are_refused_with_what_is_wrong(ed_line, mangle, message):
    with pytest.raises(access.AccessKeyError, match=re.escape(message)):
        access.parse_public_key(mangle(ed_line))


def test_a_key_line_must_be_text():
    with pytest.raises(access.AccessKeyError, match="text line"):
        access.parse_public_key({"ssh-ed25519": "AAAA"})


def test_short_rsa_keys_are_refused_long_ones_accepted():
    short = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(access.AccessKeyError, match="2048 bits"):
        access.parse_public_key(public_line(short))
    long = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    assert access.parse_public_key(public_line(long)).key_type == "ssh-rsa"


def test_key_list_collects_every_problem_and_counts_a_key_once(ed_line):
    other = public_line(ed25519.Ed25519PrivateKey.generate(), "kasubbag@dinkes")
    same_body = ed_line.replace("operator@dinkes", "other-comment")
    keys, problems = access.parse_keys([ed_line, "nonsense", other, same_body, 7])
    assert [k.line for k in keys] == [ed_line, other]
    assert [path for path, _ in problems] == [(1,), (4,)]
    assert access.parse_keys("ssh-ed25519 AAAA")[1] == [((), "must be a list of public "
                                                              "key lines")]
    assert access.parse_keys([ed_line] * 21)[1][0][1] == "at most 20 keys"


def test_account_names_come_from_the_slug_and_fit_32_characters():
    assert access.derived_account("dinkes") == "web-dinkes"
    assert access.derived_account("1-kec") == "web-1-kec"  # never starts with a digit
    long_a = "kecamatan-tanah-grogot-" + "a" * 40
    long_b = "kecamatan-tanah-grogot-" + "b" * 40
    names = {access.derived_account(long_a), access.derived_account(long_b)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 32 and access.ACCOUNT_RE.match(name)
        assert name.startswith("web-kecamatan-tanah-grogo-")


def test_assigned_accounts_are_recorded_unique_and_stable():
    recorded = {"dinkes": "web-dinkes"}
    assert access.assign_account("dinkes", recorded) == "web-dinkes"
    assert access.assign_account("dinsos", recorded) == "web-dinsos"
    # A name taken by another agency or a user of the host gets a number.
    clash = {"other": "web-dinsos"}
    assert access.assign_account("dinsos", clash) == "web-dinsos-2"
    assert access.assign_account("dinsos", {}, reserved={"web-dinsos", "web-dinsos-2"}) \
        == "web-dinsos-3"
    long_slug = "x" * 63
    taken = {"other": access.derived_account(long_slug)}
    numbered = access.assign_account(long_slug, taken)
    assert len(numbered) <= 32 and numbered.endswith("-2") and numbered not in taken.values()


def test_recorded_accounts_round_trip_through_the_state_dir(tmp_path):
    assert access.load_accounts(tmp_path) == {}
    records = {"dinsos": access.Recorded("web-dinsos", "web2"),
               "dinkes": access.Recorded("web-dinkes", "web1")}
    access.save_accounts(tmp_path, records)
    assert access.load_accounts(tmp_path) == records
    text = (tmp_path / access.ACCOUNTS_FILE).read_text()
    assert text.index("dinkes") < text.index("dinsos")


def _account(name: str, slug: str, *lines: str) -> access.SftpAccount:
    keys = tuple(access.parse_public_key(line) for line in lines)
    return access.SftpAccount(slug, name, PurePosixPath(f"/var/www/sftp/{slug}"), keys)


def test_drop_in_has_one_locked_down_match_block_per_account(ed_line):
    accounts = [_account("web-dinsos", "dinsos"), _account("web-dinkes", "dinkes", ed_line)]
    text = access.sshd_drop_in(accounts, PurePosixPath("/etc/ssh/provisioner-keys"))
    blocks = text.split("\nMatch User ")[1:]
    assert [block.split("\n")[0] for block in blocks] == ["web-dinkes", "web-dinsos"]
    first = blocks[0]
    for directive in ("ChrootDirectory /var/www/sftp/dinkes",
                      "ForceCommand internal-sftp -u 0022",
                      "AuthorizedKeysFile /etc/ssh/provisioner-keys/web-dinkes",
                      "PasswordAuthentication no", "AllowTcpForwarding no",
                      "X11Forwarding no", "PermitTTY no", "PermitTunnel no"):
        assert f"\n    {directive}\n" in f"\n{first}"
    assert text == access.sshd_drop_in(list(reversed(accounts)),
                                        PurePosixPath("/etc/ssh/provisioner-keys"))
    assert ed_line not in text  # keys live in the root-owned keys file only


@pytest.mark.parametrize("chroot", ["/var/www/a b", "/var/www/%u", "relative/path",
                                    "/var/www/../etc", '/var/www/"x'])
def test_drop_in_refuses_paths_sshd_would_read_otherwise(chroot):
    account = access.SftpAccount("dinkes", "web-dinkes", PurePosixPath(chroot), ())
    with pytest.raises(ValueError, match="sshd_config"):
        access.sshd_drop_in([account], PurePosixPath("/etc/ssh/keys"))


def test_drop_in_refuses_an_invalid_user_name():
    account = access.SftpAccount("x", "Root\nMatch", PurePosixPath("/var/www/x"), ())
    with pytest.raises(ValueError, match="user name"):
        access.sshd_drop_in([account], PurePosixPath("/etc/ssh/keys"))


def test_keys_file_holds_the_canonical_lines_only(ed_line):
    other = public_line(ed25519.Ed25519PrivateKey.generate(), "")
    account = _account("web-dinkes", "dinkes", ed_line, other)
    assert access.keys_file(account) == f"{ed_line}\n{other}\n"
    assert access.keys_file(_account("web-dinkes", "dinkes")) == ""


def test_host_key_fingerprint_matches_ssh_keygen(tmp_path, ed_line):
    known = tmp_path / "known_hosts"
    key = " ".join(ed_line.split()[:2])
    known.write_text(f"127.0.0.22 {key}\n[127.0.0.20]:2222 {key}\n")
    expected = subprocess.run(["ssh-keygen", "-lf", str(known)], capture_output=True,
                              text=True, check=True).stdout.split()[1]
    assert access.host_key_fingerprints(known, "127.0.0.22", 22) == [f"ssh-ed25519 {expected}"]
    assert access.host_key_fingerprints(known, "127.0.0.20", 2222) == \
        [f"ssh-ed25519 {expected}"]
    assert access.host_key_fingerprints(known, "127.0.0.21", 22) == []
    assert access.host_key_fingerprints(tmp_path / "absent", "127.0.0.22", 22) == []
    assert access.parse_public_key(ed_line).fingerprint == expected


def test_instructions_are_in_bahasa_indonesia_and_name_everything(ed_line):
    info = access.AccessInfo("dinkes", "dinkes.paserkab.go.id", "web3.paserkab.go.id", 22,
                             "web-dinkes", ("ssh-ed25519 SHA256:abc",), ("SHA256:def",))
    text = access.access_text(info)
    for part in ("Server   : web3.paserkab.go.id", "Port     : 22", "Pengguna : web-dinkes",
                 "ssh-ed25519 SHA256:abc", "SHA256:def", "sftp -P 22 web-dinkes@web3",
                 "/berkas/", "https://dinkes.paserkab.go.id/berkas/", "Sidik jari kunci server"):
        assert part in text
    empty = access.access_text(access.AccessInfo("dinkes", "d.example", "h", 22, "u", (), ()))
    assert "belum tercatat" in empty and "belum ada kunci" in empty
    data = info.as_json()
    assert data["user"] == "web-dinkes" and data["upload_folder"] == "/berkas"
    assert data["host_key_fingerprints"] == ["ssh-ed25519 SHA256:abc"]


# ---------------------------------------------------------------- through the registry


def _set_access(sample, slug: str, value) -> Path:
    data = sample.read(f"agencies/{slug}.yml")
    data["content_access"] = value
    return sample.write(f"agencies/{slug}.yml", data)


@pytest.mark.parametrize("value, field, fragment", [
    ({"keys": ['command="/bin/sh" ssh-ed25519 AAAA x']}, "content_access.keys.0",
     "not allowed"),
    ({"keys": "ssh-ed25519 AAAA"}, "content_access.keys", "must be a list"),
    ({"users": []}, "content_access.users", "unknown key"),
    (["ssh-ed25519 AAAA"], "content_access", "mapping"),
])
def test_bad_content_access_is_one_line_naming_file_and_field(sample, value, field, fragment):
    path = _set_access(sample, "dinkes", value)
    result = sample.cli("registry", "check")
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines()
             if re.match(rf"error: {re.escape(str(path))}(:\d+)?: {re.escape(field)}: ", line)]
    assert lines and fragment in lines[0] and "hint" in result.stderr, result.stderr
    assert not sample.state_dir.exists()


def test_valid_keys_reach_the_agency_canonically(sample, ed_line):
    from provisioner.registry import load as registry

    _set_access(sample, "dinkes", {"keys": [ed_line + "  ", ed_line]})
    inventory = registry.load_inventory(sample.root, sample.state_dir)
    assert inventory.agencies["dinkes"].content_access == (ed_line,)
    assert inventory.agencies["dkisp"].content_access == ()
    web1 = inventory.hosts["web1"]
    assert str(web1.sshd.drop_in).endswith("/lab/web1/ssh/sshd_config.d/provisioner-sftp.conf")


def test_host_sshd_paths_are_checked_like_every_host_path(sample):
    data = sample.read("hosts.yml")
    data["all"]["children"]["webservers"]["hosts"]["web1"]["sshd_config_dir"] = "etc/ssh x"
    path = sample.write("hosts.yml", data)
    result = sample.cli("registry", "check")
    assert result.exit_code == 2
    assert re.search(rf"error: {re.escape(str(path))}:\d+: .*sshd_config_dir: not a safe "
                     r"absolute path", result.stderr), result.stderr


def test_host_plan_keeps_asked_accounts_and_removes_the_rest(sample, ed_line):
    from provisioner.lifecycle import access_plan
    from provisioner.registry import load as registry

    _set_access(sample, "dinkes", {"keys": [ed_line]})
    inventory = registry.load_inventory(sample.root, sample.state_dir)
    recorded = {"gone": access.Recorded("web-gone", "web1"),
                "dkisp": access.Recorded("web-dkisp", "web2")}
    plan = access_plan.host_access(inventory, "web1", recorded)
    assert [(a.slug, a.name) for a in plan.keep] == [("dinkes", "web-dinkes")]
    assert [(a.slug, a.name) for a in plan.remove] == [("gone", "web-gone")]
    assert plan.recorded(recorded) == {"dinkes": access.Recorded("web-dinkes", "web1"),
                                       "dkisp": access.Recorded("web-dkisp", "web2")}
    leaving = access_plan.host_access(inventory, "web1", {}, leaving=["dinkes"])
    assert leaving.keep == () and leaving.remove == ()
    key = access.parse_public_key(ed_line)
    facts = {"accounts": {"web-dinkes": {"exists": False, "keys": None},
                          "web-gone": {"exists": True, "keys": ed_line + "\n"}},
             "drop_in": None}
    rows = [(c.agency, c.action, c.name, c.old, c.new)
            for c in access_plan.access_changes(plan, facts)]
    assert rows == [("dinkes", "create", "web-dinkes", (), (key.fingerprint,)),
                    ("gone", "delete", "web-gone", (key.fingerprint,), ())]
    converged = {"accounts": {"web-dinkes": {"exists": True, "keys": ed_line + "\n"},
                              "web-gone": {"exists": False, "keys": None}},
                 "drop_in": access.sshd_drop_in(plan.keep, plan.host.sshd.keys_dir)}
    assert access_plan.access_changes(plan, converged) == []
    edited = {**converged, "drop_in": converged["drop_in"] + "# by hand\n"}
    [row] = access_plan.access_changes(plan, edited)
    assert (row.agency, row.action, row.reason) == ("host web1", "update", "sshd drop-in")
