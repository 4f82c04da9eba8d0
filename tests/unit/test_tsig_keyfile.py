"""The TSIG key-file reader: BIND format, 0600 and owner checks, the secret never shown."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from provisioner.dns.tsig import TsigKey, load_tsig_key
from provisioner.errors import InputError

SECRET = base64.b64encode(b"very-secret-key-material-0123456789").decode()
GOOD = f'key "paserkab-dkisp-lab" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'


def write_key(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tsig.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def error_text(exc: InputError) -> str:
    return str(exc) + "".join(repr(p) for p in exc.problems)


@pytest.mark.parametrize("text, name, algorithm", [
    (GOOD, "paserkab-dkisp-lab", "hmac-sha256"),
    (f'key k1 {{ secret "{SECRET}"; }};', "k1", "hmac-sha256"),  # default algorithm
    (f'# tsig-keygen output\nkey "k.example" {{ // comment\n  algorithm HMAC-SHA512;\n'
     f'  /* block\n comment */ secret "{SECRET}";\n}};', "k.example", "hmac-sha512"),
])
def test_reads_bind_key_files(tmp_path, text, name, algorithm):
    key = load_tsig_key(write_key(tmp_path, text))
    assert (key.name, key.algorithm, key.secret) == (name, algorithm, SECRET)
    assert SECRET not in repr(key)
    assert key.dnspython_key().algorithm.to_text().startswith(algorithm)


BAD = {
    "empty file": ("", "holds no key"),
    "not a key statement": (f'server 1.2.3.4 {{ secret "{SECRET}"; }};', "expected 'key'"),
    "no secret": ('key "k" { algorithm hmac-sha256; };', "has no secret"),
    "secret not base64": ('key "k" { secret "not*base64!"; };', "not valid"),
    "secret with bad padding": (f'key "k" {{ secret "{SECRET[:-1]}"; }};', "not valid"),
    "unknown algorithm": (f'key "k" {{ algorithm {SECRET[:12]}; secret "{SECRET}"; }};',
                          "unsupported algorithm"),
    "unknown statement": (f'key "k" {{ password "{SECRET}"; }};', "'algorithm' or 'secret'"),
    "missing semicolon": (f'key "k" {{ secret "{SECRET}" }};', "';' after the secret value"),
    "unterminated": (f'key "k" {{ secret "{SECRET}";', "'}' closing the key"),
    "two keys": (GOOD + GOOD, "more than one statement"),
    "secret given twice": (f'key "k" {{ secret "{SECRET}"; secret "{SECRET}"; }};',
                           "given twice"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_bad_key_files_are_refused_without_showing_the_secret(tmp_path, text, message):
    path = write_key(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_tsig_key(path)
    shown = error_text(caught.value)
    assert message in shown and str(path) in shown
    assert SECRET not in shown and SECRET[:12] not in shown
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = write_key(tmp_path, GOOD, mode)
    with pytest.raises(InputError) as caught:
        load_tsig_key(path)
    shown = error_text(caught.value)
    assert str(path) in shown and f"mode {mode:04o}" in shown and "chmod 600" in shown
    assert SECRET not in shown


def test_owner_only_modes_are_accepted(tmp_path):
    assert isinstance(load_tsig_key(write_key(tmp_path, GOOD, 0o400)), TsigKey)


def test_key_file_owned_by_another_user_is_refused(tmp_path):
    path = write_key(tmp_path, GOOD)
    os.chown(path, os.geteuid() + 1, -1)
    with pytest.raises(InputError) as caught:
        load_tsig_key(path)
    shown = error_text(caught.value)
    assert str(path) in shown and "chown" in shown and SECRET not in shown


def test_missing_key_file_names_the_file(tmp_path):
    with pytest.raises(InputError) as caught:
        load_tsig_key(tmp_path / "nope.key")
    assert "nope.key" in str(caught.value) and "file not found" in str(caught.value)
