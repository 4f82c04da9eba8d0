"""JSON Lines: one versioned record per agency (schema provisioner/sweep-record/v1).

The source of truth of a sweep: every other format is rendered from the same records.
"""

from __future__ import annotations

from ..sweep import SweepResult
from . import json_text


def render(sweep: SweepResult) -> str:
    return "".join(json_text(record) + "\n" for record in sweep.records)
