"""Onboarding's pure parts: the plan rows computed from what the hosts and the zone hold
(site files, vhost, certificates; the vhost drift diff), and the audit entries of a
step's outcomes. ``onboard.py`` reads the facts, calls these and carries the plan out.
"""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ProvisionerError
from ..hosts.agent import HostFacts
from ..plan import Change, Outcome, Plan
from ..registry.models import RENEW_DAYS, Agency
from ..safety.audit import AuditEntry
from ..site import render as site
from ..tls import ratelimit
from ..tls.certs import CertInfo, CertTarget, Install, cert_info
from ..tls.decisions import CertDecision, decide

DRIFT_DIFF_LINES = 60  # of a hand-edited vhost's diff shown by plan
STEP_OF_KIND = {"dns": "dns", "site": "web", "vhost": "web", "cert": "tls"}


def site_change(agency: Agency, changes: Sequence[site.FileChange]) -> Change:
    """One row for an agency's site files: counts per action, edited files named."""
    by_action: dict[str, list[str]] = {}
    for change in changes:
        by_action.setdefault(change.action, []).append(change.path)
    mutating = {a: by_action.get(a, []) for a in ("create", "update", "remove")}
    new = tuple(f"{len(paths)} {action}" for action, paths in mutating.items() if paths)
    kept = by_action.get("keep-edited", [])
    reason = f"kept, edited by the agency: {', '.join(sorted(kept))}" if kept else ""
    if not any(mutating.values()):
        return Change(agency.slug, "site", "noop", agency.fqdn, reason=reason or "up to date")
    first_deploy = all(c.action == "create" for c in changes)
    action = "create" if first_deploy else "update"
    return Change(agency.slug, "site", action, agency.fqdn, new=new, reason=reason)


def vhost_change(agency: Agency, current_sha256: str | None, desired: bytes,
                 tls_ready: bool, drifted: bool = False) -> Change:
    mode = "https" if tls_ready else "http only, until the certificate exists"
    if drifted:
        return Change(agency.slug, "vhost", "update", agency.fqdn, new=(mode,),
                      reason="drift: changed by hand since provisioner wrote it; restored, "
                             "the edited copy kept aside")
    if current_sha256 is None:
        return Change(agency.slug, "vhost", "create", agency.fqdn, new=(mode,))
    if current_sha256 == site.sha256_hex(desired):
        return Change(agency.slug, "vhost", "noop", agency.fqdn, reason="up to date")
    return Change(agency.slug, "vhost", "update", agency.fqdn, new=(mode,))


def drift_diff(path: Path, edited: str, desired: bytes,
               limit: int = DRIFT_DIFF_LINES) -> tuple[str, ...]:
    """A vhost of ours changed by hand, as a unified diff from the host's copy to what
    onboarding writes back (at most ``limit`` lines)."""
    lines = list(difflib.unified_diff(
        edited.splitlines(), desired.decode("utf-8").splitlines(),
        f"{path} (on the host)", f"{path} (provisioner)", lineterm=""))
    if len(lines) <= limit:
        return tuple(lines)
    return (*lines[:limit], f"... {len(lines) - limit} more lines")


def cert_changes(target: CertTarget, decision: CertDecision,
                 deferred: ratelimit.Deferred | None = None) -> list[Change]:
    """The target's row per agency; a certificate the CA's limits leave for a later run
    is a noop that says when it fits."""
    action = "noop" if deferred else \
        {"order": "create", "renew": "update", "keep": "noop"}[decision.action]
    reason = f"{decision.reason}; {deferred.reason}" if deferred else decision.reason
    return [Change(slug, "cert", action, ", ".join(target.names), rdtype=target.challenge,
                   reason=reason) for slug in target.agencies]


def decide_certs(targets: Sequence[CertTarget], facts: Mapping[str, HostFacts],
                 now: dt.datetime, days: int = RENEW_DAYS
                 ) -> tuple[dict[str, CertDecision], dict[str, bool]]:
    """Per target: order, renew or keep (from the certificate each host serves from disk);
    per agency: whether a certificate is installed at all (its vhost can serve HTTPS)."""
    decisions, installed = {}, {}
    for target in targets:
        infos = [_installed_cert(facts.get(place.host), place) for place in target.installs]
        present = [info for info in infos if info is not None]
        # Every host must hold a good certificate; the worst one decides.
        worst = None if len(present) < len(infos) else min(present, key=lambda i: i.not_after)
        decisions[target.key] = decide(worst, target.names, now, days)
        for slug in target.agencies:
            installed[slug] = len(present) == len(infos)
    return decisions, installed


def dns_scope(agencies: Sequence[Agency] | None, selected: Sequence[Agency],
               host_errors: Mapping[str, str]) -> list[Agency] | None:
    """Whom the DNS step covers: a name never points at a host that cannot serve it
    this run (None, the whole zone, only while every host is usable)."""
    if not host_errors:
        return None if agencies is None else list(agencies)
    return [a for a in selected if a.host not in host_errors]


def failed_hosts(target: CertTarget, host_errors: Mapping[str, str]) -> list[str]:
    """The hosts a certificate goes to that cannot be used this run."""
    return sorted({place.host for place in target.installs} & set(host_errors))


def _installed_cert(facts: HostFacts | None, place: Install) -> CertInfo | None:
    pem = facts.certs.get(place.fullchain) if facts else None
    if not pem:
        return None
    try:
        return cert_info(pem.encode() if isinstance(pem, str) else pem)
    except ProvisionerError:
        return None  # unreadable: order a new one


# =========================================================================== audit


def audit_entries(command: str, plan: Plan, outcomes: Sequence[Outcome]) -> list[AuditEntry]:
    """One entry per planned change, with the result of the step that carried it out;
    plus every failure that no planned change explains (e.g. a failed verification)."""
    result_of = {(o.agency, o.kind): o for o in outcomes}
    entries, explained = [], set()
    for change in (c for c in plan if c.mutating):
        outcome = result_of.get((change.agency, STEP_OF_KIND.get(change.kind, change.kind)))
        if outcome is None:
            continue  # the step did not run for this agency (an earlier step failed)
        explained.add((outcome.agency, outcome.kind))
        entries.append(AuditEntry.of_change(
            command, change, outcome.status,
            outcome.detail if outcome.status == "failed" else None))
    entries += [AuditEntry(command=command, agency=o.agency, kind=o.kind, action="apply",
                           change=o.kind, result="failed", reason=o.detail)
                for o in outcomes if o.status == "failed" and (o.agency, o.kind) not in explained]
    return entries


def interrupted_entries(command: str, plan: Plan, step: str, outcomes: Sequence[Outcome],
                        exc: BaseException) -> list[AuditEntry]:
    """The planned changes of a step that was interrupted before it reported them."""
    reported = {(o.agency, o.kind) for o in outcomes}
    reason = (f"interrupted ({type(exc).__name__}) before its result was known: the change "
              "may have been made; re-run to converge")
    return [AuditEntry.of_change(command, c, "failed", reason)
            for c in plan if c.mutating and STEP_OF_KIND.get(c.kind, c.kind) == step
            and (c.agency, step) not in reported]
