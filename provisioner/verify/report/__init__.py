"""Reports of a sweep, one module per format, each a pure function of the sweep's records.

jsonl (the source of truth), junit (CI), prom (Prometheus textfile), html (leadership).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from ...errors import ProvisionerError
from ...hosts import hostlib

# What JSON leaves raw with ensure_ascii=False and a terminal would obey: DEL, the C1
# controls (\x9b is CSI), line and paragraph separators, bidirectional overrides.
UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def json_text(data: Any, **options: Any) -> str:
    """JSON that keeps non-ASCII text readable yet escapes what a terminal would obey
    (json.dumps escapes the C0 controls itself)."""
    return UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}",
                              json.dumps(data, ensure_ascii=False, **options))


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write through a temporary file in the same folder and rename it into place, so a
    reader (Prometheus' textfile collector, a web server) never sees half a file. The
    text may come in pieces (a large sweep's JSON Lines, never whole in memory).

    A path that exists but is no regular file (/dev/stdout, a FIFO, /dev/null) is
    written in place: renaming over it would replace a device with a file.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(_pieces(text))
        except OSError as exc:
            raise ProvisionerError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    try:
        hostlib.write_atomic(path, (piece.encode("utf-8") for piece in _pieces(text)), 0o644,
                             create=False)
    except OSError as exc:
        raise ProvisionerError(f"cannot write {path}: {exc.strerror or exc}") from None


def _pieces(text: str | Iterable[str]) -> Iterable[str]:
    return (text,) if isinstance(text, str) else text
