"""Secret files and secret scrubbing.

Key files (the TSIG key, the ACME account key) must be private to the user running
the toolkit: mode 0600 (no group or other bits) and owned by that user. A file that is
not is refused with the fix, never with its content.

``Redactor`` scrubs secrets from text before it is written anywhere (audit log, log
lines, error messages, Ansible event output): every secret it was told about (in the
forms it is usually written), PEM private key blocks and the ``secret "..."`` of a
BIND/TSIG key statement. ``read_secret_file`` teaches the process-wide
``LOADED_SECRETS`` every secret it reads, so anything scrubbed with it is safe from
the keys this process has loaded.
"""

from __future__ import annotations

import base64
import binascii
import os
import pwd
import re
import stat
import threading
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError, Problem
from ..hosts import hostlib

REDACTED = "[REDACTED]"

PEM_PRIVATE_KEY_HEADER = re.compile(r"-----BEGIN ([A-Z0-9 ]*?)PRIVATE KEY-----")
"""The first line of any PEM private key (PKCS#1, PKCS#8, SEC1, OpenSSH, encrypted)."""

_PEM_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]*?)PRIVATE KEY-----.*?"
    r"(?:-----END (?P=label)PRIVATE KEY-----|\Z)", re.DOTALL)
_TSIG_SECRET = re.compile(r'(\bsecret\s+")([^"]*)(")')
_SECRET_KEY_NAME = re.compile(r"(secret|password|passphrase|private[_-]?key)"
                              r"(?![_-]?(file|path|name))", re.IGNORECASE)
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]+={0,2}")


# =========================================================================== private files

def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def private_file_problem(path: Path, what: str, mode: int, owner_uid: int,
                         user_uid: int) -> Problem | None:
    """Why a file with this stat may not hold a secret (None when it may)."""
    if not stat.S_ISREG(mode):
        return Problem(path, None, what, "not a regular file", "point it at the key file itself")
    if owner_uid != user_uid:
        user = _owner_name(user_uid)
        return Problem(path, None, what,
                       f"owned by {_owner_name(owner_uid)}, not by {user} who runs provisioner",
                       f"run: chown {user} {path}")
    bits = stat.S_IMODE(mode)
    if bits & 0o077:
        return Problem(path, None, what,
                       f"readable or writable by group or others (mode {bits:04o})",
                       f"run: chmod 600 {path}")
    return None


def _open_error(path: Path, what: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError([Problem(path, None, what, "file not found",
                                   "create it with mode 0600 or fix the path")])
    return InputError([Problem(path, None, what, f"cannot read: {exc.strerror}")])


def _check_open_file(path: Path, what: str, fd: int) -> None:
    info = os.fstat(fd)
    problem = private_file_problem(path, what, info.st_mode, info.st_uid, os.geteuid())
    if problem:
        raise InputError([problem])


def require_private_file(path: Path, what: str) -> None:
    """Refuse (InputError, exit 2) a secret file others could read or another user owns.

    ``what`` names the file in the message, e.g. ``"tsig_key_file"`` or
    ``"ACME account key"``; the message carries the fix, never the content.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(path, what, exc) from None
    try:
        _check_open_file(path, what, fd)
    finally:
        os.close(fd)


def read_secret_file(path: Path, what: str, *, redactor: Redactor | None = None) -> bytes:
    """Check the file like ``require_private_file`` (on the opened file), then read it.

    Every secret in it is taught to ``redactor`` (default: ``LOADED_SECRETS``).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(path, what, exc) from None
    with os.fdopen(fd, "rb") as handle:
        _check_open_file(path, what, handle.fileno())
        try:
            data = handle.read()
        except OSError as exc:
            raise _open_error(path, what, exc) from None
    (redactor or LOADED_SECRETS).learn(data)
    return data


# =========================================================================== redaction

def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file (the mode set before any byte) in a
    0700 folder: the ACME account key, its registration, the rate-limit ledger."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    hostlib.write_atomic(path, data, 0o600)


def tsig_secrets_in(text: str) -> list[str]:
    """The values of every ``secret "..."`` in a BIND key statement."""
    return [match.group(2) for match in _TSIG_SECRET.finditer(text) if match.group(2)]


MIN_SECRET_CHARS = 8
"""Shorter forms are not matched: they would scrub ordinary words; no real key is that short."""


def _base64_forms(raw: bytes) -> set[str]:
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return encoded | {form.rstrip("=") for form in encoded}


def _written_forms(secret: str | bytes) -> set[str]:
    """The ways a secret shows up in text: as given, and base64 (standard, URL-safe,
    with or without padding) of its bytes."""
    if isinstance(secret, bytes):
        forms = _base64_forms(secret)
        try:
            forms.add(secret.decode("utf-8").strip())
        except UnicodeDecodeError:
            pass
    else:
        text = secret.strip()
        forms = {text}
        if _BASE64_TEXT.fullmatch(text):
            try:
                forms |= _base64_forms(base64.b64decode(text, validate=True))
            except binascii.Error:
                pass
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


def _names_a_secret(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY_NAME.search(key))


class Redactor:
    """Scrubs known secrets, PEM private key blocks and TSIG ``secret "..."`` from text.

    Thread-safe; learning a secret is cheap, scrubbing is one regex pass per pattern.
    """

    def __init__(self, secrets: Iterable[str | bytes] = ()):
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._known: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | bytes) -> None:
        """Remember one secret value (a base64 TSIG secret, a token, raw key bytes)."""
        forms = _written_forms(secret)
        with self._lock:
            if not forms <= self._forms:
                self._forms |= forms
                longest_first = sorted(self._forms, key=len, reverse=True)
                self._known = re.compile("|".join(map(re.escape, longest_first)))

    def learn(self, content: bytes | str) -> None:
        """Remember the secrets inside a key file's content.

        A BIND key statement gives its ``secret`` values; a PEM file gives each line of
        its base64 body (so a key pasted without its BEGIN/END lines is still caught);
        any other file is one secret as a whole (a bare token file).
        """
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        tsig = tsig_secrets_in(text)
        if tsig:
            for secret in tsig:
                self.add(secret)
        elif PEM_PRIVATE_KEY_HEADER.search(text):
            for line in text.splitlines():
                if len(line) >= 16 and not line.startswith("-----"):
                    self.add(line.strip())
        elif text.strip():
            self.add(text)

    def scrub(self, text: str) -> str:
        """The text with every secret replaced by ``[REDACTED]``."""
        text = _PEM_PRIVATE_KEY_BLOCK.sub(f"-----{REDACTED} PRIVATE KEY-----", text)
        text = _TSIG_SECRET.sub(rf"\g<1>{REDACTED}\g<3>", text)
        known = self._known
        return known.sub(REDACTED, text) if known else text

    def scrub_data(self, value: Any) -> Any:
        """Scrub strings inside dicts/lists/tuples; a value under a key named like
        ``secret``, ``password`` or ``private_key`` is replaced as a whole."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {key: REDACTED if _names_a_secret(key) and item not in (None, "")
                    else self.scrub_data(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub_data(item) for item in value)
        return value


LOADED_SECRETS = Redactor()
"""Every secret this process has read with ``read_secret_file`` (or added by hand)."""
