"""Prometheus textfile (node_exporter's textfile collector), metric names in the style of
blackbox_exporter. Write it with ``report.write_atomic``."""

from __future__ import annotations

from datetime import datetime

from ..sweep import SweepResult

PASSING = ("pass", "warn")


def render(sweep: SweepResult) -> str:
    s = sweep.summary
    lines: list[str] = []
    per_agency: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("provisioner_agency_active", "gauge",
         "1 when the agency site is active: DNS, TLS and HTTPS pass.",
         [({"agency": _name(r)}, float(r["active"])) for r in sweep.records]),
        ("provisioner_check_success", "gauge",
         "1 when the check passed (or passed with a warning), 0 when it failed or could not run.",
         [({"agency": _name(r), "check": c["id"]}, float(c["status"] in PASSING))
          for r in sweep.records for c in r["checks"] if c["status"] != "skip"]),
        ("provisioner_ssl_earliest_cert_expiry", "gauge",
         "Expiry of the served certificate, in unixtime.",
         [({"agency": _name(r)}, _unixtime(r["cert"]["not_after"]))
          for r in sweep.records if r["cert"]["not_after"]]),
        ("provisioner_publication_score", "gauge",
         "Website publication score 0-100 (not the Ombudsman's grade).",
         [({"agency": _name(r)}, float(r["publication"]["score"])) for r in sweep.records]),
    ]
    sweep_wide = [
        ("provisioner_sweep_active_ratio", "Share of agency sites that are active (0-1).",
         s.active / s.total if s.total else 0.0),
        ("provisioner_sweep_agencies", "Agencies swept.", float(s.total)),
        ("provisioner_sweep_agencies_active", "Agencies whose site is active.", float(s.active)),
        ("provisioner_sweep_certs_expiring", "Certificates expiring within 21 days.",
         float(len(s.expiring))),
        ("provisioner_sweep_publication_score_mean", "Mean website publication score.",
         s.mean_score),
        ("provisioner_sweep_duration_seconds", "How long the sweep took.", sweep.duration),
        ("provisioner_sweep_timestamp_seconds", "When the sweep finished, in unixtime.",
         sweep.finished_at.timestamp()),
    ]
    for name, kind, help_text, samples in per_agency:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    for name, help_text, value in sweep_wide:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _name(record: dict) -> str:
    return record["agency"] or record["url"]


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _unixtime(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
