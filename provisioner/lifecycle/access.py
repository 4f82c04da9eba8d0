"""Agencies' content access over chrooted SFTP: the pure parts (issue 17, item 1).

What an agency file's ``content_access: {keys: [...]}`` may hold, the system account
an agency gets on its host (derived from the slug, at most 32 characters, unique, kept
in the state dir), the sshd drop-in with one ``Match User`` block per account, the
root-owned keys file per account, and the connection instructions the agency reads
(Bahasa Indonesia). Nothing here touches a host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from ..hosts import hostlib
from ..registry.models import SshdSettings

# Key types an agency may use: OpenSSH's current defaults and hardware-backed keys.
# DSA is gone from OpenSSH; RSA only at MIN_RSA_BITS and up.
KEY_TYPES = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)
MIN_RSA_BITS = 3072
MAX_KEYS = 20
MAX_KEY_LINE = 8192
# A comment is a label for people (operator@dinkes): no controls, nothing sshd or a
# terminal would read as more than text.
COMMENT_RE = re.compile(r"^[A-Za-z0-9@._+:=-]{1,100}$")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
# Linux user names (useradd's own rule, Debian's default NAME_REGEX): 32 at most.
MAX_ACCOUNT = 32
ACCOUNT_PREFIX = "web-"
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HASH_SUFFIX = 6
# sshd_config values we write: absolute paths without spaces, quotes or %-tokens.
SSHD_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
SFTP_UMASK = "0022"  # uploads readable by nginx's workers
# The chroot is the site folder itself (root-owned, as OpenSSH requires): the account
# owns what is inside it, and this folder is where new files and folders go.
UPLOAD_FOLDER = "berkas"
ACCOUNTS_FILE = Path("access") / "accounts.json"


class AccessKeyError(ValueError):
    """A key line an agency file may not hold; the message names what is wrong."""


@dataclass(frozen=True)
class PublicKey:
    """One validated key line, rewritten canonically (``type base64 [comment]``)."""

    key_type: str
    body: str
    comment: str

    @property
    def line(self) -> str:
        return " ".join(part for part in (self.key_type, self.body, self.comment) if part)

    @property
    def fingerprint(self) -> str:
        return fingerprint(base64.b64decode(self.body))


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (``ssh-keygen -lf``)."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(line: object) -> PublicKey:
    """A key line as OpenSSH writes it in a .pub file; no options, one line."""
    if not isinstance(line, str):
        raise AccessKeyError("must be a text line like 'ssh-ed25519 AAAA... name@agency'")
    if len(line) > MAX_KEY_LINE or "\n" in line or "\r" in line or "\x00" in line:
        raise AccessKeyError("must be one line of at most 8 KiB")
    parts = line.split()
    if parts and parts[0] not in KEY_TYPES:
        raise AccessKeyError(f"key type {parts[0][:40]!r} is not allowed (options such as "
                             f"'from=' neither); allowed: {', '.join(KEY_TYPES)}")
    if not 2 <= len(parts) <= 3:
        raise AccessKeyError("must be 'TYPE BASE64 [COMMENT]' (no options, no spaces "
                             "in the comment)")
    key_type, body, comment = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if comment and not COMMENT_RE.match(comment):
        raise AccessKeyError("the comment may hold only letters, digits and @._+:=- "
                             "(at most 100)")
    _check_body(key_type, body)
    return PublicKey(key_type, body, comment)


def _check_body(key_type: str, body: str) -> None:
    """The base64 body decodes, names the same type, and is a key cryptography reads."""
    try:
        if not BASE64_RE.match(body):
            raise binascii.Error
        blob = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise AccessKeyError("the key's second field is not base64") from None
    if blob[4:4 + len(key_type)] != key_type.encode() or \
            int.from_bytes(blob[:4], "big") != len(key_type):
        raise AccessKeyError(f"the key's body is not a {key_type} key (pasted wrongly?)")
    try:
        key = load_ssh_public_key(f"{key_type} {body}".encode())
    except (ValueError, TypeError):
        raise AccessKeyError(f"the key's body is not a valid {key_type} key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise AccessKeyError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} "
                             f"(better: ssh-keygen -t ed25519)")


def parse_keys(value: object) -> tuple[tuple[PublicKey, ...], list[tuple[tuple, str]]]:
    """``content_access.keys``: the keys, and problems as (keypath below it, message).

    A key listed twice counts once (the same body, whatever the comment)."""
    if not isinstance(value, list):
        return (), [((), "must be a list of public key lines")]
    if len(value) > MAX_KEYS:
        return (), [((), f"at most {MAX_KEYS} keys")]
    keys: dict[str, PublicKey] = {}
    problems = []
    for index, line in enumerate(value):
        try:
            key = parse_public_key(line)
        except AccessKeyError as exc:
            problems.append(((index,), str(exc)))
            continue
        keys.setdefault(key.body, key)
    return tuple(keys.values()), problems


# ---------------------------------------------------------------- accounts


def derived_account(slug: str) -> str:
    """``web-<slug>``; a slug too long for 32 characters is cut and given a short hash
    of the whole slug, so two long slugs with the same start still differ."""
    name = ACCOUNT_PREFIX + slug
    if len(name) <= MAX_ACCOUNT:
        return name
    suffix = hashlib.sha256(slug.encode()).hexdigest()[:HASH_SUFFIX]
    head = name[:MAX_ACCOUNT - HASH_SUFFIX - 1].rstrip("-")
    return f"{head}-{suffix}"


def assign_account(slug: str, recorded: Mapping[str, str],
                   reserved: Iterable[str] = ()) -> str:
    """The account of ``slug``: the recorded one, else the derived name, numbered when
    another agency (or a name in ``reserved``, e.g. the host's own users) has it."""
    if slug in recorded:
        return recorded[slug]
    taken = set(recorded.values()) | set(reserved)
    base = derived_account(slug)
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        tail = f"-{number}"
        candidate = base[:MAX_ACCOUNT - len(tail)].rstrip("-") + tail
    if not ACCOUNT_RE.match(candidate):
        raise ValueError(f"derived account {candidate!r} is not a valid user name")
    return candidate


@dataclass(frozen=True)
class Recorded:
    """An account provisioner created: its name and the host it is on."""

    account: str
    host: str


def load_accounts(state_dir: Path) -> dict[str, Recorded]:
    """slug -> the recorded account (an absent file: none yet)."""
    path = state_dir / ACCOUNTS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(slug): Recorded(str(entry["account"]), str(entry["host"]))
            for slug, entry in data.items() if ACCOUNT_RE.match(str(entry["account"]))}


def accounts_json(accounts: Mapping[str, Recorded]) -> str:
    return json.dumps({slug: {"account": r.account, "host": r.host}
                       for slug, r in sorted(accounts.items())}, indent=2) + "\n"


def save_accounts(state_dir: Path, accounts: Mapping[str, Recorded]) -> None:
    """Written whole to a temp file and renamed: a crash leaves the old or the new file."""
    path = state_dir / ACCOUNTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    hostlib.write_atomic(path, accounts_json(accounts).encode(), mode=None)


# ---------------------------------------------------------------- sshd drop-in


@dataclass(frozen=True)
class SftpAccount:
    """One agency's account on its host, as the drop-in and the keys file need it."""

    slug: str
    name: str
    chroot: PurePosixPath  # the site folder: root-owned, not writable by the account
    keys: tuple[PublicKey, ...]


def _sshd_path(path: PurePosixPath | str) -> str:
    text = str(path)
    if not SSHD_PATH_RE.match(text) or "/../" in f"{text}/":
        raise ValueError(f"{text!r} cannot be written into sshd_config")
    return text


def sshd_drop_in(accounts: Sequence[SftpAccount], keys_dir: PurePosixPath) -> str:
    """The drop-in for the host's ``sshd_config.d``: one ``Match User`` block per account
    (sorted, so the same accounts always give the same bytes)."""
    lines = ["# Written by provisioner: chrooted SFTP for agencies' site content.",
             "# Do not edit; 'provisioner onboard' rewrites it from the agency files."]
    for account in sorted(accounts, key=lambda a: a.name):
        if not ACCOUNT_RE.match(account.name):
            raise ValueError(f"{account.name!r} is not a valid user name")
        lines += [
            "",
            f"Match User {account.name}",
            f"    ChrootDirectory {_sshd_path(account.chroot)}",
            f"    ForceCommand internal-sftp -u {SFTP_UMASK}",
            f"    AuthorizedKeysFile {_sshd_path(keys_dir)}/{account.name}",
            "    PubkeyAuthentication yes",
            "    PasswordAuthentication no",
            "    KbdInteractiveAuthentication no",
            "    AllowTcpForwarding no",
            "    AllowStreamLocalForwarding no",
            "    AllowAgentForwarding no",
            "    PermitTunnel no",
            "    X11Forwarding no",
            "    PermitTTY no",
        ]
    return "\n".join(lines) + "\n"


def keys_file(account: SftpAccount) -> str:
    """The account's root-owned authorized keys: plain key lines, no options."""
    return "".join(f"{key.line}\n" for key in account.keys)


# Host vars (hosts.yml) that place provisioner's sshd files -> SshdSettings fields.
SSHD_HOST_VARS = {"sshd_binary": "binary", "sshd_config": "main_config",
                  "sshd_config_dir": "config_dir", "sftp_keys_dir": "keys_dir",
                  "sshd_pid_file": "pid_file"}


def converge_request(accounts: Sequence[SftpAccount], removed: Sequence[SftpAccount],
                     web_root: PurePosixPath, sshd: SshdSettings,
                     manifest_path: str) -> dict:
    """The host agent's ``content_access`` request: ``accounts`` is every account the
    host keeps (the drop-in names exactly these), ``removed`` the ones to delete."""
    return {
        "web_root": str(web_root), "manifest_path": manifest_path,
        "upload_folder": UPLOAD_FOLDER, "keys_dir": str(sshd.keys_dir),
        "accounts": [{"name": a.name, "site_dir": str(a.chroot), "keys": keys_file(a)}
                     for a in accounts],
        "remove": [{"name": a.name, "site_dir": str(a.chroot)} for a in removed],
        "sshd_binary": str(sshd.binary), "sshd_config": str(sshd.main_config),
        "sshd_pid_file": str(sshd.pid_file), "drop_in": str(sshd.drop_in),
        "drop_in_text": sshd_drop_in(accounts, sshd.keys_dir),
    }


# ---------------------------------------------------------------- instructions


def host_key_fingerprints(known_hosts_file: Path, address: str, port: int) -> list[str]:
    """The SHA256 fingerprints the known_hosts file holds for the host (paramiko reads it)."""
    import paramiko  # deferred: the registry imports this module on every CLI run

    pattern = address if port == 22 else f"[{address}]:{port}"
    try:
        known = paramiko.HostKeys(str(known_hosts_file))
    except (OSError, paramiko.SSHException):
        return []
    entries = known.lookup(pattern) or {}
    return sorted(f"{key_type} {fingerprint(key.asbytes())}"
                  for key_type, key in entries.items())


@dataclass(frozen=True)
class AccessInfo:
    """What an agency needs to connect, as ``provisioner access`` prints it."""

    agency: str
    fqdn: str
    host: str
    port: int
    user: str
    host_keys: tuple[str, ...]
    keys: tuple[str, ...]  # fingerprints of the agency's own keys

    def as_json(self) -> dict:
        return {"agency": self.agency, "site": f"https://{self.fqdn}/", "host": self.host,
                "port": self.port, "user": self.user, "upload_folder": f"/{UPLOAD_FOLDER}",
                "host_key_fingerprints": list(self.host_keys),
                "key_fingerprints": list(self.keys)}


def access_text(info: AccessInfo) -> str:
    """Connection instructions for the agency's staff, in Bahasa Indonesia."""
    host_keys = "\n".join(f"    {line}" for line in info.host_keys) or \
        "    (belum tercatat: minta sidik jari kepada DKISP sebelum tersambung)"
    keys = "\n".join(f"    {line}" for line in info.keys) or "    (belum ada kunci)"
    return (
        f"Akses pengelolaan konten situs https://{info.fqdn}/\n"
        f"\n"
        f"  Server   : {info.host}\n"
        f"  Port     : {info.port}\n"
        f"  Pengguna : {info.user}\n"
        f"  Protokol : SFTP, hanya dengan kunci SSH (tanpa kata sandi)\n"
        f"\n"
        f"Sidik jari kunci server (SHA256). Cocokkan saat pertama kali tersambung;\n"
        f"jika berbeda, jangan lanjutkan dan hubungi DKISP:\n{host_keys}\n"
        f"\n"
        f"Kunci yang diizinkan masuk:\n{keys}\n"
        f"\n"
        f"Cara tersambung (misalnya dengan FileZilla atau WinSCP, protokol SFTP), atau:\n"
        f"    sftp -P {info.port} {info.user}@{info.host}\n"
        f"\n"
        f"Letak berkas (yang tampil di https://{info.fqdn}/ adalah isi folder / ):\n"
        f"  /index.html             halaman depan; berkas yang ada boleh disunting dan\n"
        f"                          suntingan Anda tidak ditimpa oleh DKISP\n"
        f"  /layanan/               halaman standar pelayanan tiap layanan\n"
        f"  /{UPLOAD_FOLDER}/               tempat berkas dan folder baru (dokumen, gambar);\n"
        f"                          tampil di https://{info.fqdn}/{UPLOAD_FOLDER}/...\n"
        f"Folder teratas hanya dapat diubah DKISP. Tautan (symlink) ke luar situs tidak\n"
        f"ditampilkan oleh server web.\n"
    )
