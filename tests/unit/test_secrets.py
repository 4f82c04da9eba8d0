"""Secret files (0600, owned by the user) and the Redactor that scrubs secrets from text."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from provisioner.errors import InputError
from provisioner.safety.secrets import (
    REDACTED,
    Redactor,
    private_file_problem,
    read_secret_file,
    require_private_file,
    tsig_secrets_in,
)

RAW = b"0123456789abcdef0123456789abcdef"
SECRET = base64.b64encode(RAW).decode()
KEY_TEXT = f'key "paserkab-dkisp" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
ME = os.geteuid()
REGULAR = stat.S_IFREG


def pem(key, fmt=serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt,
                             serialization.NoEncryption()).decode()


PEM_KEYS = {
    "pkcs8 ec": pem(ec.generate_private_key(ec.SECP256R1())),
    "sec1 ec": pem(ec.generate_private_key(ec.SECP256R1()),
                   serialization.PrivateFormat.TraditionalOpenSSL),
    "pkcs1 rsa": pem(rsa.generate_private_key(65537, 2048),
                     serialization.PrivateFormat.TraditionalOpenSSL),
    "openssh ed25519": pem(ed25519.Ed25519PrivateKey.generate(),
                           serialization.PrivateFormat.OpenSSH),
}


def write(tmp_path: Path, data: str, mode: int) -> Path:
    path = tmp_path / "secret.key"
    path.write_text(data)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- private files

@pytest.mark.parametrize("mode, owner, expected", [
    (REGULAR | 0o600, ME, None),
    (REGULAR | 0o400, ME, None),
    (REGULAR | 0o700, ME, None),
    (REGULAR | 0o640, ME, "chmod 600"),
    (REGULAR | 0o604, ME, "chmod 600"),
    (REGULAR | 0o620, ME, "chmod 600"),
    (REGULAR | 0o666, ME, "chmod 600"),
    (REGULAR | 0o600, ME + 1000, "chown"),
    (stat.S_IFDIR | 0o700, ME, "not a regular file"),
], ids=["0600", "0400", "0700", "group read", "other read", "group write", "0666",
        "other owner", "directory"])
def test_private_file_rule(mode, owner, expected):
    problem = private_file_problem(Path("/k/tsig.key"), "tsig_key_file", mode, owner, ME)
    if expected is None:
        assert problem is None
    else:
        assert expected in str(problem)
        assert str(problem).startswith("/k/tsig.key: tsig_key_file: ")


def test_owner_problem_names_the_fix_with_the_user():
    problem = private_file_problem(Path("/k/a.pem"), "ACME account key", REGULAR | 0o600,
                                   ME + 1000, ME)
    assert problem.hint.startswith("run: chown ") and problem.hint.endswith(" /k/a.pem")


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_files_are_accepted_and_read(tmp_path, mode):
    path = write(tmp_path, KEY_TEXT, mode)
    require_private_file(path, "tsig_key_file")
    assert read_secret_file(path, "tsig_key_file", redactor=Redactor()) == KEY_TEXT.encode()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_open_files_are_refused_with_the_fix_and_without_the_content(tmp_path, mode):
    path = write(tmp_path, KEY_TEXT, mode)
    for attempt in (require_private_file, read_secret_file):
        with pytest.raises(InputError) as caught:
            attempt(path, "tsig_key_file")
        assert caught.value.exit_code == 2
        text = str(caught.value) + repr(caught.value.problems)
        assert str(path) in text and f"chmod 600 {path}" in text and f"{mode:04o}" in text
        assert SECRET not in text


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_secret_file(tmp_path / "absent.key", "tsig_key_file")
    with pytest.raises(InputError, match="not a regular file"):
        require_private_file(tmp_path, "tsig_key_file")


def test_reading_teaches_the_redactor_the_secret(tmp_path):
    redactor = Redactor()
    read_secret_file(write(tmp_path, KEY_TEXT, 0o600), "tsig_key_file", redactor=redactor)
    assert redactor.scrub(f"nsupdate -y hmac-sha256:k:{SECRET}") == \
        f"nsupdate -y hmac-sha256:k:{REDACTED}"


# --------------------------------------------------------------------------- redactor

def test_tsig_secrets_in_key_statements():
    assert tsig_secrets_in(KEY_TEXT + KEY_TEXT.replace(SECRET, "b3RoZXI=")) == \
        [SECRET, "b3RoZXI="]
    assert tsig_secrets_in('secret ""; no key here') == []


@pytest.mark.parametrize("label", PEM_KEYS)
def test_pem_private_keys_are_scrubbed_whole(label):
    key = PEM_KEYS[label]
    scrubbed = Redactor().scrub(f"before\n{key}after")
    assert scrubbed == f"before\n-----{REDACTED} PRIVATE KEY-----\nafter"


def test_a_truncated_pem_key_is_scrubbed_to_the_end():
    key = PEM_KEYS["pkcs8 ec"]
    assert Redactor().scrub("log: " + key[:80]) == f"log: -----{REDACTED} PRIVATE KEY-----"


def test_certificates_and_public_keys_are_kept():
    text = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\nssh-ed25519 AAAAC3"
    assert Redactor([SECRET]).scrub(text) == text


@pytest.mark.parametrize("written", [
    SECRET,
    SECRET.rstrip("="),
    base64.urlsafe_b64encode(RAW).decode(),
    f'key "k" {{ secret "{SECRET}"; }};',
], ids=["as given", "unpadded", "url-safe", "in a key statement"])
@pytest.mark.parametrize("known", [SECRET, RAW], ids=["base64 text", "raw bytes"])
def test_known_secrets_are_scrubbed_in_every_written_form(known, written):
    scrubbed = Redactor([known]).scrub(f"error: {written} refused")
    assert SECRET.rstrip("=") not in scrubbed and REDACTED in scrubbed


def test_any_tsig_statement_is_scrubbed_even_when_the_secret_is_unknown():
    assert Redactor().scrub(KEY_TEXT) == KEY_TEXT.replace(SECRET, REDACTED)


def test_text_without_secrets_is_unchanged_and_short_values_are_not_secrets():
    text = "dinkes.paserkab.go.id A 127.0.0.20 changed; secretariat ok"
    redactor = Redactor([SECRET, "abc", ""])
    assert redactor.scrub(text) == text
    assert redactor.scrub("abc") == "abc"


def test_learn_a_pem_file_catches_its_body_without_the_armour():
    key = PEM_KEYS["pkcs1 rsa"]
    body_line = key.splitlines()[5]
    redactor = Redactor()
    redactor.learn(key.encode())
    assert redactor.scrub(f"debug: {body_line}") == f"debug: {REDACTED}"


def test_learn_a_bare_token_file():
    redactor = Redactor()
    redactor.learn(b"tok-9f8e7d6c5b4a\n")
    assert redactor.scrub("Authorization: Bearer tok-9f8e7d6c5b4a") == \
        f"Authorization: Bearer {REDACTED}"


def test_scrub_data_walks_containers_and_replaces_values_under_secret_names():
    redactor = Redactor([SECRET])
    data = {"zone": "paserkab.go.id", "records": [f"x {SECRET}", 3, None],
            "pair": ("a", SECRET), "tsig_secret": "anything", "password": "",
            "private_key": {"pem": "x"}, "tsig_key_file": "/state/lab/keys/tsig.key",
            "private_key_path": "/etc/ssl/private/dinkes.key"}
    assert redactor.scrub_data(data) == {
        "zone": "paserkab.go.id", "records": [f"x {REDACTED}", 3, None],
        "pair": ("a", REDACTED), "tsig_secret": REDACTED, "password": "",
        "private_key": REDACTED, "tsig_key_file": "/state/lab/keys/tsig.key",
        "private_key_path": "/etc/ssl/private/dinkes.key"}
