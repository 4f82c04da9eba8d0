"""An agency file's ``status:`` line (active / offboarded): the one-line edit offboarding
and restore make, every other byte of the file kept, and its plan row."""

from __future__ import annotations

import re

import yaml

from ..errors import ProvisionerError
from ..hosts import hostlib
from ..plan import Change
from ..registry.models import Agency

_STATUS_LINE = re.compile(r"^status[ \t]*:[^\r\n]*", re.M)
_SLUG_LINE = re.compile(r"^slug[ \t]*:[^\r\n]*(\r?\n)?", re.M)


def with_status(text: str, status: str, note: str = "") -> str:
    """The agency file with its top-level ``status:`` set to ``status``.

    The existing ``status:`` line is replaced, or one is added after the ``slug:``
    line; every other byte (comments, order, quoting) stays. The result is parsed back
    and must differ from the original only in ``status``: anything else is refused.
    """
    note = " ".join(note.split())
    line = f"status: {status}" + (f"  # {note}" if note else "")
    if _STATUS_LINE.search(text):
        new = _STATUS_LINE.sub(lambda _m: line, text, count=1)
    elif (slug := _SLUG_LINE.search(text)) is not None:
        newline = slug.group(1) or "\n"
        head = text[:slug.end()] if slug.group(1) else text[:slug.end()] + newline
        new = head + line + newline + text[slug.end():]
    else:
        new = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    try:
        before, after = yaml.safe_load(text), yaml.safe_load(new)
    except yaml.YAMLError as exc:
        raise ProvisionerError(f"cannot set status: the file is not valid YAML ({exc})") \
            from None
    if not isinstance(before, dict) or after != {**before, "status": status}:
        raise ProvisionerError("cannot set status with a one-line edit (is 'status:' a "
                               "multi-line value?)", hint=f"set 'status: {status}' by hand")
    return new


def set_registry_status(agency: Agency, status: str, note: str) -> bool:
    """Write ``status`` into the agency's registry file atomically; False when already set."""
    path = agency.source
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvisionerError(f"{path}: cannot read: {exc.strerror}") from None
    current = yaml.safe_load(text).get("status", "active")
    if current == status:
        return False
    try:
        new = with_status(text, status, note)
    except ProvisionerError as exc:
        raise ProvisionerError(f"{path}: {exc.message}", hint=exc.hint) from None
    hostlib.write_atomic(path, new.encode("utf-8"), path.stat().st_mode & 0o7777,
                         sync_folder=True)
    return True


def registry_change(agency: Agency, status: str) -> Change:
    current = "offboarded" if agency.offboarded else "active"
    if current == status:
        return Change(agency.slug, "registry", "noop", str(agency.source),
                      reason=f"already {status}")
    return Change(agency.slug, "registry", "update", str(agency.source), old=(current,),
                  new=(status,), reason="status line only: the file and its comments stay")
