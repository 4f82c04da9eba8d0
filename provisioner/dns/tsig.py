"""The TSIG key file: a BIND ``key`` statement holding exactly one key, parsed without
quoting the file's text in any message. The secret is read from a 0600 file owned by the
running user, kept out of every repr and message, and handed to dnspython only while a
message is signed (``TsigKey.dnspython_key``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path

import dns.tsig

from ..errors import InputError, Problem
from ..safety.secrets import read_secret_file

DEFAULT_ALGORITHM = "hmac-sha256"
ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1",
              "hmac-md5")


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str = field(repr=False)  # base64, never printed

    def dnspython_key(self) -> dns.tsig.Key:
        """A dnspython key for signing one message (its repr shows the secret: don't keep it)."""
        return dns.tsig.Key(self.name, self.secret, self.algorithm)


_TOKEN_RE = re.compile(
    r'(?P<space>\s+)|(?P<comment>/\*.*?\*/|(?://|#)[^\n]*)'
    r'|"(?P<quoted>[^"\\\n]*)"|(?P<word>[A-Za-z0-9._+=-]+)|(?P<punct>[{};])',
    re.S,
)
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


@dataclass(frozen=True)
class _Token:
    text: str
    kind: str  # "word", "quoted" or "punct"
    line: int


def _tokens(text: str, path: Path) -> list[_Token]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise _key_error(path, line, "unexpected character")
        kind = match.lastgroup
        if kind in ("word", "quoted", "punct"):
            tokens.append(_Token(match.group(kind), kind, line))
        line += match.group(0).count("\n")
        pos = match.end()
    return tokens


KEY_FORMAT_HINT = 'expected: key "NAME" { algorithm hmac-sha256; secret "BASE64"; };'


def _key_error(path: Path, line: int | None, message: str) -> InputError:
    return InputError([Problem(path, line, "tsig_key_file", message, KEY_FORMAT_HINT)])


def parse_tsig_key(text: str, path: Path) -> TsigKey:
    """Parse a BIND key file holding exactly one key. Messages never quote the file's text."""
    tokens = _tokens(text, path)
    if not tokens:
        raise _key_error(path, None, "the file holds no key")
    key, rest = _parse_key_block(tokens, path)
    if rest:
        raise _key_error(path, rest[0].line, "more than one statement; the file must hold one key")
    return key


def _parse_key_block(tokens: list[_Token], path: Path) -> tuple[TsigKey, list[_Token]]:
    def expect(i: int, what: str, ok: bool) -> None:
        if not ok:
            line = tokens[i].line if i < len(tokens) else tokens[-1].line
            raise _key_error(path, line, f"expected {what}")

    expect(0, "'key'", tokens[0].kind == "word" and tokens[0].text == "key")
    expect(1, "the key name", len(tokens) > 1 and tokens[1].kind in ("word", "quoted")
           and bool(_KEY_NAME_RE.match(tokens[1].text)))
    expect(2, "'{'", len(tokens) > 2 and tokens[2].text == "{")
    values: dict[str, _Token] = {}
    i = 3
    while i < len(tokens) and tokens[i].text != "}":
        keyword = tokens[i]
        expect(i, "'algorithm' or 'secret'",
               keyword.kind == "word" and keyword.text in ("algorithm", "secret"))
        expect(i + 1, f"a value after '{keyword.text}'",
               i + 1 < len(tokens) and tokens[i + 1].kind in ("word", "quoted"))
        expect(i + 2, f"';' after the {keyword.text} value",
               i + 2 < len(tokens) and tokens[i + 2].text == ";")
        if keyword.text in values:
            raise _key_error(path, keyword.line, f"'{keyword.text}' is given twice")
        values[keyword.text] = tokens[i + 1]
        i += 3
    expect(i, "'}' closing the key", i < len(tokens))
    expect(i + 1, "';' after '}'", i + 1 < len(tokens) and tokens[i + 1].text == ";")
    return _key_from(tokens[1].text, values, tokens[1].line, path), tokens[i + 2:]


def _key_from(name: str, values: dict[str, _Token], line: int, path: Path) -> TsigKey:
    algorithm = values["algorithm"].text.lower() if "algorithm" in values else DEFAULT_ALGORITHM
    if algorithm not in ALGORITHMS:
        raise _key_error(path, values["algorithm"].line,
                         f"unsupported algorithm; use one of {', '.join(ALGORITHMS)}")
    secret = values.get("secret")
    if secret is None:
        raise _key_error(path, line, "the key has no secret")
    try:
        decoded = base64.b64decode(secret.text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise _key_error(path, secret.line, "the secret is not valid, non-empty base64")
    return TsigKey(name=name, algorithm=algorithm, secret=secret.text)


def load_tsig_key(path: Path) -> TsigKey:
    """Read the key file; refuse one that others could read or that another user owns."""
    path = Path(path)
    raw = read_secret_file(path, "tsig_key_file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _key_error(path, None, "not a text file") from None
    return parse_tsig_key(text, path)
