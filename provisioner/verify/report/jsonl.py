"""JSON Lines: one versioned record per agency (schema provisioner/sweep-record/v1).

The source of truth of a sweep: every other format is rendered from the same records.
"""

from __future__ import annotations

from typing import Iterator

from ..sweep import SweepResult, record_texts


def render(sweep: SweepResult) -> str:
    return "".join(lines(sweep))


def lines(sweep: SweepResult) -> Iterator[str]:
    """The report line by line (a large sweep's text is never whole in memory)."""
    return (text + "\n" for text in record_texts(sweep.records))
