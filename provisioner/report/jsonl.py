"""JSON Lines: one versioned record per agency (schema provisioner/sweep-record/v1).

The source of truth of a sweep: every other format is rendered from the same records.
"""

from __future__ import annotations

import json

from ..sweep import SweepResult


def render(sweep: SweepResult) -> str:
    return "".join(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n"
                   for record in sweep.records)
