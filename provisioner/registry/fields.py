"""The field checks every inventory file's validation uses: a collector of problems
with their YAML line numbers, and checks for text, paths, addresses, names, ports and
switches.

Anything that is later interpolated into an nginx config, a path or a shell command is
held to a strict character set here, and re-checked where it is used.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Any

from ..errors import Problem

LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Characters that could break an nginx config, a shell line or a path when interpolated.
UNSAFE_RE = re.compile(r"[;{}'\"`$\\\s\x00]")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TEMPLATE_VAR_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/+\-=?&#:@!,()*]*)?$")


def is_hostname(name: str) -> bool:
    """RFC 1123 host name: labels of letters, digits and hyphens; 253 characters at most."""
    if not isinstance(name, str) or not name or len(name.rstrip(".")) > 253:
        return False
    return all(LABEL_RE.match(label) for label in name.rstrip(".").lower().split("."))


class Collector:
    """Gathers problems for one file, with line numbers from the YAML source; its
    methods check one field each (text, path, address, name, port, switch, mapping)
    and return the value, or None (or the default) with the problem recorded."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path = path
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, keypath: tuple, message: str, hint: str | None = None) -> None:
        line = None
        for i in range(len(keypath), -1, -1):
            line = self.lines.get(tuple(keypath[:i]))
            if line:
                break
        if keypath[:1] == ("all",) and "hosts" in keypath:
            # Name host fields "web1.key", not by their position in the group tree.
            keypath = keypath[keypath.index("hosts") + 1:]
        field = ".".join(str(k) for k in keypath) or "file"
        self.problems.append(Problem(self.path, line, field, message, hint))

    def unknown_keys(self, data: dict, allowed: tuple[str, ...], prefix: tuple = ()) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
                self.add((*prefix, key), "unknown key", hint)

    def text(self, data: dict, key: str, prefix: tuple = (), *, required: bool = True,
             multiline: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing", "this field is required")
            return None
        if type(value) is not str:  # most values are text: skip these checks for them
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                self.add((*prefix, key), "must be text")
                return None
            value = str(value)
        value = value.strip()
        if not value:
            if required:
                self.add((*prefix, key), "must not be empty")
            return None
        bad = CONTROL_RE.search(value)
        if bad or (not multiline and "\n" in value):
            self.add((*prefix, key), "contains a control character or line break",
                     "use plain single-line text")
            return None
        return value

    def paragraphs(self, data: dict, key: str, prefix: tuple = (), *,
                   required: bool = True) -> tuple[str, ...] | None:
        """A component: a text or a list of texts (list items / paragraphs)."""
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing", "required: a text or a list of texts")
            return None
        if isinstance(value, list):
            keypath = (*prefix, key)
            texts = [self.text({i: item}, i, keypath, multiline=True)
                     for i, item in enumerate(value)]
        else:
            texts = [self.text(data, key, prefix, multiline=True)]
        result = [t for t in texts if t]
        if not result:
            if required:
                self.add((*prefix, key), "must not be empty")
            return None
        return tuple(result)

    def safe_path(self, data: dict, key: str, variables: dict[str, str],
                  prefix: tuple = (), *, required: bool = True) -> Path | None:
        raw = data.get(key)
        if raw is None:
            if required:
                self.add((*prefix, key), "missing", "an absolute path is required")
            return None
        if not isinstance(raw, str):
            self.add((*prefix, key), "must be a path")
            return None
        value = _resolve_vars(raw, variables)
        if value is None:
            self.add((*prefix, key), "uses an unknown template variable",
                     "only {{ state_dir }} and {{ inventory_dir }} are supported")
            return None
        if UNSAFE_RE.search(value) or not value.startswith("/") or "/../" in value + "/":
            self.add((*prefix, key), f"not a safe absolute path: {value!r}",
                     "no spaces, quotes, ';', '{', '}', '$' or '..'")
            return None
        return Path(value)

    def ip(self, data: dict, key: str, prefix: tuple, version: int | None = None,
           *, required: bool = True) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing")
            return None
        try:
            addr = ipaddress.ip_address(str(value))
        except ValueError:
            self.add((*prefix, key), f"not an IP address: {value!r}")
            return None
        if version and addr.version != version:
            self.add((*prefix, key), f"must be an IPv{version} address")
            return None
        return str(addr)

    def hostname(self, data: dict, key: str, prefix: tuple, *,
                 required: bool = True) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing")
            return None
        if not is_hostname(value):
            self.add((*prefix, key), f"not a valid DNS name: {value!r}",
                     "letters, digits and hyphens in labels of 1-63 characters")
            return None
        return str(value).rstrip(".").lower()

    def port(self, data: dict, key: str, prefix: tuple, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            self.add((*prefix, key), "must be a port number (1-65535)")
            return default
        return value

    def flag(self, data: dict, key: str, prefix: tuple, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.add((*prefix, key), "must be true or false")
            return default
        return value

    def mapping(self, data: Any, prefix: tuple, keys: tuple[str, ...],
                wrong: str | None = None) -> bool:
        """Whether ``data`` is a mapping (its unknown keys reported). When it is not, the
        problem is ``wrong``, or "must be a mapping" with the allowed keys as the hint."""
        if not isinstance(data, dict):
            if wrong:
                self.add(prefix, wrong)
            else:
                self.add(prefix, "must be a mapping", f"keys: {', '.join(keys)}")
            return False
        self.unknown_keys(data, keys, prefix)
        return True


def _resolve_vars(value: str, variables: dict[str, str]) -> str | None:
    """Replace {{ state_dir }} / {{ inventory_dir }}; None when another variable is used."""
    unknown = [m.group(1) for m in TEMPLATE_VAR_RE.finditer(value) if m.group(1) not in variables]
    if unknown or ("{{" in TEMPLATE_VAR_RE.sub("", value)):
        return None
    return TEMPLATE_VAR_RE.sub(lambda m: variables[m.group(1)], value)


def is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
        return True
    except ValueError:
        return False

