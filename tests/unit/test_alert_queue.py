"""The alert queue in history.sqlite: state and changes written together; each change
sent once even when two sweeps run at the same time; kept until delivered."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from provisioner.verify import history

NOW = dt.datetime(2026, 1, 5, 1, 0, tzinfo=dt.timezone.utc)


def queue(state_dir: Path, changes: list[dict], channels: list[str]) -> None:
    history.update_alert_state(state_dir, lambda previous: ({"dinkes": {"seen": True}}, changes),
                               channels)


def test_a_claimed_queue_is_not_sent_twice_and_a_failed_one_is_kept(tmp_path: Path) -> None:
    queue(tmp_path, [{"kind": "down"}, {"kind": "cert"}], ["email", "webhook"])
    first = history.claim_alerts(tmp_path, "email", NOW)
    assert [change for _, change in first] == [{"kind": "down"}, {"kind": "cert"}]
    assert history.claim_alerts(tmp_path, "email", NOW) == []  # another sweep, same time
    assert len(history.claim_alerts(tmp_path, "webhook", NOW)) == 2  # its own queue

    history.alerts_failed(tmp_path, [row_id for row_id, _ in first], "email x: refused")
    [status] = [q for q in history.alert_queues(tmp_path) if q.channel == "email"]
    assert (status.waiting, status.attempts, status.last_error) == (2, 1, "email x: refused")
    again = history.claim_alerts(tmp_path, "email", NOW)
    assert again == first
    history.alerts_delivered(tmp_path, [row_id for row_id, _ in again])
    assert [q.channel for q in history.alert_queues(tmp_path)] == ["webhook"]


def test_a_claim_left_by_a_killed_sweep_expires(tmp_path: Path) -> None:
    queue(tmp_path, [{"kind": "up"}], ["telegram"])
    assert len(history.claim_alerts(tmp_path, "telegram", NOW)) == 1
    later = NOW + dt.timedelta(seconds=history.CLAIM_SECONDS - 1)
    assert history.claim_alerts(tmp_path, "telegram", later) == []
    much_later = NOW + dt.timedelta(seconds=history.CLAIM_SECONDS + 1)
    assert len(history.claim_alerts(tmp_path, "telegram", much_later)) == 1


def test_state_is_replaced_and_queues_of_removed_channels_dropped(tmp_path: Path) -> None:
    queue(tmp_path, [{"kind": "down"}], ["email", "telegram"])
    seen = []
    history.update_alert_state(tmp_path, lambda previous: (seen.append(previous) or {}, []),
                               ["email"])
    assert seen == [{"dinkes": {"seen": True}}]
    assert [q.channel for q in history.alert_queues(tmp_path)] == ["email"]
    history.update_alert_state(tmp_path, lambda previous: (seen.append(previous) or {}, []),
                               ["email"])
    assert seen[-1] == {}
