"""Onboarding end to end: DNS record, vhost + starter site, TLS certificate, verification.

A run is two calls on one ``Session`` (which holds one SSH connection per host):
``plan`` reads facts (the zone, each host's files and certificates) and computes
every change without side effects; ``apply`` carries the plan out step by step
and returns one outcome per agency and step. An agency that fails a step is left
out of the later steps; other agencies go on, and nothing they got is rolled back.
The rows ``plan`` computes from the facts (pure) are ``onboard_plan.py``.

Steps, in order:

* dns: one signed update for the whole zone, then wait for every nameserver;
* web: one Ansible run ships every host's files in one transfer and applies them
  as a transaction (``nginx -t`` before the swap, one reload per host);
* tls: certificates are ordered concurrently (after the pre-order guardrails),
  installed 0600; agencies that had none get their HTTPS vhost in a second web
  run, renewed ones a reload; then the served serial is compared;
* verify: the same checks as ``provisioner verify``, for every onboarded agency.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..dns.step import DnsPlan, apply_dns, plan_dns
from ..errors import ProvisionerError, UsageError
from ..hosts import deploy
from ..hosts.agent import HostFacts
from ..hosts.ansible_events import ProgressCallback
from ..plan import Change, Outcome, Plan
from ..registry.models import RENEW_DAYS, Agency, Inventory
from ..safety.audit import AuditLog
from ..site import render as site
from ..tls import ratelimit
from ..tls.certs import CertTarget, read_records
from ..tls.decisions import CertDecision, cert_targets, demands, for_this_ca
from ..tls.issuer import CertResult, Issuer, open_ledger
from ..tls.served import served_problems
from ..verify import verifier as verifying
from ..verify.sweep import Limits, reasons, verify_shard
from . import access, access_plan
from .onboard_plan import (
    audit_entries,
    cert_changes,
    decide_certs,
    dns_scope,
    drift_diff,
    failed_hosts,
    interrupted_entries,
    site_change,
    vhost_change,
)
from .run import LockedRun, Report, quiet

STEPS = ("dns", "web", "tls", "verify")
PHASES = ("plan", "dns", "web", "tls", "verify")
VERIFY_CONCURRENCY = 32


# =========================================================================== plan data


@dataclass(frozen=True)
class OnboardPlan:
    agencies: tuple[Agency, ...]  # hosted agencies in scope
    steps: tuple[str, ...]
    dns: DnsPlan | None
    plan: Plan  # dns, site, vhost and cert changes
    targets: tuple[CertTarget, ...]
    decisions: Mapping[str, CertDecision]  # target key -> order / renew / keep
    tls_ready: Mapping[str, bool]  # slug -> a certificate is installed (HTTPS vhost)
    host_errors: Mapping[str, str]  # host -> why it cannot be used this run
    skipped: tuple[Outcome, ...]  # agencies in scope with nothing to onboard (external)
    timings: Mapping[str, float] = field(default_factory=dict)
    budget: ratelimit.Budget | None = None  # the CA's rate limits (tls step only)
    drift: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # slug -> vhost diff
    # host -> its agencies' SFTP accounts, for every host of the run that has some (web step)
    access: Mapping[str, access_plan.HostAccess] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes or bool(self.host_errors)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "agencies": [a.slug for a in self.agencies],
                "changes": [c.to_dict() for c in self.plan],
                "counts": self.plan.counts(),
                "dns": None if self.dns is None else {
                    "zone": self.dns.zone, "serial": self.dns.serial,
                    "owned_records": self.dns.owned_records, "safety": self.dns.safety},
                "host_errors": dict(self.host_errors),
                "skipped": [o.to_dict() for o in self.skipped],
                "rate_limits": self.budget.to_dict() if self.budget else None,
                "drift": {slug: list(diff) for slug, diff in self.drift.items()}}


@dataclass(frozen=True)
class OnboardResult:
    plan: OnboardPlan
    outcomes: tuple[Outcome, ...]  # one per agency and step that ran
    reloads: Mapping[str, int]  # host -> nginx reloads done by this run
    timings: Mapping[str, float]  # phase -> seconds

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)

    def by_agency(self) -> dict[str, Outcome]:
        """One line per agency: its first failure, else changed when any step changed."""
        summary: dict[str, Outcome] = {}
        for outcome in self.outcomes:
            current = summary.get(outcome.agency)
            if current is None or _rank(outcome) > _rank(current):
                summary[outcome.agency] = outcome
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "outcomes": [o.to_dict() for o in self.outcomes],
                "agencies": {slug: o.to_dict() for slug, o in self.by_agency().items()},
                "reloads": dict(self.reloads), "timings": dict(self.timings),
                "plan": self.plan.to_dict()}


def _rank(outcome: Outcome) -> int:
    return {"ok": 0, "changed": 1, "failed": 2}[outcome.status]


# =========================================================================== the session


class Session(LockedRun):
    """One onboarding run: SSH connections to the hosts, the DNS client, timings.

    ``command`` (the command line) makes it a mutating session: it holds the
    inventory's lock from plan to apply and appends every change to the audit log.
    Without it the session only reads (``provisioner plan``). ``audit_as`` audits the
    changes under that command line without taking the lock (a run that already holds
    it: restore).
    """

    def __init__(self, inventory: Inventory, report: Report = quiet, *,
                 command: str | None = None, break_lock: bool = False,
                 audit_as: str | None = None):
        super().__init__(inventory, report, command=command, break_lock=break_lock)
        self.audit_command = audit_as or command
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start

    @contextlib.contextmanager
    def _audited(self, step: str, oplan: OnboardPlan, outcomes: list[Outcome]
                 ) -> Iterator[None]:
        """Time one step and append its audit records as it ends, in ``finally``: a crash
        or Ctrl-C in a later step cannot leave this step's changes unrecorded, and one in
        this step records its planned changes as interrupted (they may have happened)."""
        first = len(outcomes)
        interrupted: BaseException | None = None
        with self._phase(step):
            try:
                yield
            except BaseException as exc:
                interrupted = exc
                raise
            finally:
                if self.audit_command is not None:
                    done = outcomes[first:]
                    entries = audit_entries(self.audit_command, oplan.plan, done)
                    if interrupted is not None:
                        entries += interrupted_entries(self.audit_command, oplan.plan, step,
                                                       done, interrupted)
                    AuditLog(self.inventory.state_dir).record(*entries)

    # ------------------------------------------------------------------ plan

    def plan(self, agencies: Sequence[Agency] | None, *, steps: Sequence[str] = STEPS,
             force: bool = False, renew_days: int = RENEW_DAYS) -> OnboardPlan:
        """Read facts and compute every change (agencies None: every active agency)."""
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise UsageError(f"--only: unknown step {', '.join(unknown)}",
                             hint=f"steps: {', '.join(STEPS)}")
        with self._phase("plan"):
            selected = list(agencies) if agencies is not None else \
                self.inventory.select([], all_=True)
            hosted = tuple(a for a in selected if a.hosted)
            skipped = tuple(Outcome(a.slug, "onboard", "ok", "hosted elsewhere "
                                    f"({a.external_url}): nothing to onboard")
                            for a in selected if not a.hosted)
            rendered = {a.slug: site.render_site(a) for a in hosted}
            facts, host_errors = self._host_facts(hosted, rendered)
            dns_plan = plan_dns(self.inventory, dns_scope(agencies, selected, host_errors),
                                force=force, preflight=True, client=self.dns) \
                if "dns" in steps else None
            targets = tuple(cert_targets(self.inventory, hosted))
            decisions, installed = decide_certs(targets, facts,
                                                dt.datetime.now(dt.timezone.utc), renew_days)
            changes = list(dns_plan.plan) if dns_plan else []
            drift: dict[str, tuple[str, ...]] = {}
            access_hosts: dict[str, access_plan.HostAccess] = {}
            if "web" in steps:
                changes += self._web_changes(hosted, rendered, facts, installed, host_errors,
                                             drift)
                changes += self._access_changes(sorted(facts), access_hosts)
            budget = None
            if "tls" in steps:
                decisions = for_this_ca(
                    decisions, {r.key: r for r in read_records(self.inventory.state_dir)},
                    self.inventory.settings.acme.directory)
                budget = self.ledger.budget(demands(
                    [t for t in targets if not failed_hosts(t, host_errors)], decisions,
                    self.inventory.settings.acme))
                changes += [c for t in targets for c in cert_changes(
                    t, decisions[t.key], budget.deferred.get(t.key))]
        return OnboardPlan(agencies=hosted, steps=tuple(steps), dns=dns_plan, plan=Plan(changes),
                           targets=targets, decisions=decisions, tls_ready=installed,
                           host_errors=host_errors, skipped=skipped, timings=dict(self.timings),
                           budget=budget, drift=drift, access=access_hosts)

    @functools.cached_property
    def ledger(self) -> ratelimit.Ledger:
        """The CA's rate-limit ledger, read once per run (plan and apply see the same)."""
        return open_ledger(self.inventory)

    def _web_changes(self, hosted: Sequence[Agency], rendered: Mapping[str, Mapping[str, bytes]],
                     facts: Mapping[str, HostFacts], installed: Mapping[str, bool],
                     host_errors: Mapping[str, str], drift: dict[str, tuple[str, ...]]
                     ) -> list[Change]:
        """The site and vhost rows; ``drift`` gets the diff of each vhost changed by hand."""
        changes = []
        for agency in hosted:
            if agency.host in host_errors:
                continue
            site_facts = facts[agency.host].sites.get(agency.slug)
            if site_facts is not None and site_facts.error:  # its own problem: others go on
                changes.append(Change(agency.slug, "site", "conflict", agency.fqdn,
                                      reason=site_facts.error))
                continue
            host = self.inventory.hosts[agency.host]
            vhost = site.render_vhost(agency, host, self.inventory.settings,
                                      tls_ready=installed.get(agency.slug, False))
            changes.append(site_change(agency, site_facts.plan(rendered[agency.slug])
                                       if site_facts else site.plan_site_files(
                                           dict(rendered[agency.slug]), None, {})))
            changes.append(vhost_change(agency, site_facts.vhost_sha256 if site_facts else None,
                                        vhost, installed.get(agency.slug, False),
                                        bool(site_facts and site_facts.vhost_drift is not None)))
            if site_facts and site_facts.vhost_drift is not None:
                drift[agency.slug] = drift_diff(site.vhost_path(agency, host),
                                                site_facts.vhost_drift, vhost)
        return changes

    def _access_changes(self, host_names: Sequence[str],
                        access_hosts: dict[str, access_plan.HostAccess]) -> list[Change]:
        """Agencies' SFTP accounts on the run's hosts; a host none of whose agencies has
        content_access (and none had) is not asked. ``access_hosts`` gets the hosts
        that have accounts."""
        recorded = access.load_accounts(self.inventory.state_dir)
        changes = []
        for name in host_names:
            wanted = access_plan.host_access(self.inventory, name, recorded)
            if not wanted.keep and not wanted.remove:
                continue
            sshd = wanted.host.sshd
            try:
                facts = self.pool.client(name).call("content_access_facts", names=wanted.names,
                                                keys_dir=str(sshd.keys_dir),
                                                drop_in=str(sshd.drop_in))
            except ProvisionerError as exc:  # this host's accounts wait; the rest goes on
                changes.append(Change(f"host {name}", "access", "conflict",
                                      str(sshd.drop_in), reason=str(exc)))
                continue
            access_hosts[name] = wanted
            changes += access_plan.access_changes(wanted, facts)
        return changes

    def _host_facts(self, hosted: Sequence[Agency], rendered: Mapping[str, Mapping[str, bytes]]
                    ) -> tuple[dict[str, HostFacts], dict[str, str]]:
        """Connect, preflight and read facts on every involved host, hosts in parallel."""
        names = sorted({a.host for a in hosted})

        def read(name: str) -> HostFacts | str:
            try:
                on_host = [a for a in hosted if a.host == name]
                host = self.inventory.hosts[name]
                preflight = self.pool.preflight(
                    name, repairable=[site.vhost_path(a, host) for a in on_host])
                if not preflight.ok:
                    return "; ".join(preflight.problems)
                return self.pool.client(name).facts(
                    on_host, self.inventory.settings,
                    {a.slug: list(rendered[a.slug]) for a in on_host})
            except ProvisionerError as exc:
                return str(exc)

        facts, errors = {}, {}
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
            for name, found in zip(names, pool.map(read, names)):
                if isinstance(found, str):
                    errors[name] = found
                else:
                    facts[name] = found
        return facts, errors

    # ------------------------------------------------------------------ apply

    def apply(self, oplan: OnboardPlan, *, force: bool = False,
              progress: ProgressCallback | None = None) -> OnboardResult:
        outcomes: list[Outcome] = list(oplan.skipped)
        reloads: dict[str, int] = {}
        failed: set[str] = set()

        def record(new: Sequence[Outcome]) -> None:
            outcomes.extend(new)
            failed.update(o.agency for o in new if o.status == "failed")

        with self._audited("plan", oplan, outcomes):
            record([Outcome(agency.slug, "web", "failed", f"host {host}: {error}")
                    for host, error in oplan.host_errors.items()
                    for agency in oplan.agencies if agency.host == host])
            record([Outcome(change.agency, "web", "failed", change.reason) for change in oplan.plan
                    if change.kind == "site" and change.action == "conflict"])
            record([Outcome(change.agency, "access", "failed", change.reason)
                    for change in oplan.plan
                    if change.kind == "access" and change.action == "conflict"])
        if oplan.dns is not None:
            with self._audited("dns", oplan, outcomes):
                record(self._apply_dns(oplan, force))
        if "web" in oplan.steps:
            with self._audited("web", oplan, outcomes):
                record(self._deploy(oplan, [a for a in oplan.agencies if a.slug not in failed],
                                    oplan.tls_ready, reloads, progress, only_if_planned=True))
                record(self._converge_access(oplan))
        if "tls" in oplan.steps:
            with self._audited("tls", oplan, outcomes):
                record(self._certificates(oplan, failed, reloads, progress))
        if "verify" in oplan.steps:
            with self._audited("verify", oplan, outcomes):
                record(self.verify([a for a in oplan.agencies if a.slug not in failed]))
        return OnboardResult(oplan, tuple(outcomes), reloads, dict(self.timings))

    def _apply_dns(self, oplan: OnboardPlan, force: bool) -> list[Outcome]:
        result = apply_dns(self.inventory, oplan.dns, force=force, client=self.dns)
        self.report(f"dns: {result.update_messages} update message(s)"
                    + (f", zone serial {result.serial}" if result.serial else ", nothing to change"))
        return list(result.outcomes)

    def _deploy(self, oplan: OnboardPlan, agencies: Sequence[Agency],
                tls_ready: Mapping[str, bool], reloads: dict[str, int],
                progress: ProgressCallback | None, *,
                only_if_planned: bool = False) -> list[Outcome]:
        """Ship site files and vhosts (``only_if_planned``: no Ansible run at all when the
        plan has no site or vhost change for these agencies)."""
        if not agencies:
            return []
        slugs = {a.slug for a in agencies}
        if only_if_planned and not any(c.mutating for c in oplan.plan
                                       if c.agency in slugs and c.kind in ("site", "vhost")):
            return [Outcome(a.slug, "web", "ok", "site and vhost up to date") for a in agencies]
        bundles = [deploy.site_bundle(a, self.inventory, tls_ready=tls_ready.get(a.slug, False))
                   for a in agencies]
        report = deploy.deploy_sites(self.inventory, bundles, progress)
        for host in report.hosts.values():
            reloads[host.host] = reloads.get(host.host, 0) + int(host.reloaded)
        self.report(f"web: {len(bundles)} agencies on {len(report.hosts)} host(s), "
                    f"{sum(int(h.reloaded) for h in report.hosts.values())} reload(s)")
        return [d.outcome() for d in report.agencies.values()]

    def _converge_access(self, oplan: OnboardPlan) -> list[Outcome]:
        """Each host's SFTP accounts in one agent call (after the sites are in place);
        the state dir records the accounts a host now has. A host whose accounts are
        as planned is converged again when an account's site got new files from the web
        step (written as root: they are handed to the account)."""
        outcomes = []
        deployed = {c.agency for c in oplan.plan if c.kind == "site" and c.mutating}
        for name, wanted in sorted(oplan.access.items()):
            involved = {a.slug for a in (*wanted.keep, *wanted.remove)} | {f"host {name}"}
            changed = sorted({c.agency for c in oplan.plan
                              if c.kind == "access" and c.mutating and c.agency in involved})
            if not changed and not deployed & {a.slug for a in wanted.keep}:
                continue
            try:
                self.pool.client(name).content_access(wanted.request())
            except ProvisionerError as exc:
                outcomes += [Outcome(slug, "access", "failed", str(exc)) for slug in changed]
                continue
            state_dir = self.inventory.state_dir
            access.save_accounts(state_dir, wanted.recorded(access.load_accounts(state_dir)))
            outcomes += [Outcome(slug, "access", "changed", "SFTP account") for slug in changed]
        return outcomes

    def _certificates(self, oplan: OnboardPlan, failed: set[str], reloads: dict[str, int],
                      progress: ProgressCallback | None) -> list[Outcome]:
        deferred = oplan.budget.deferred if oplan.budget else {}
        wanted = [t for t in oplan.targets if oplan.decisions[t.key].action != "keep"
                  and t.key not in deferred and any(slug not in failed for slug in t.agencies)]
        outcomes = [o for t in oplan.targets if oplan.decisions[t.key].action == "keep"
                    for o in CertResult(t.key, "ok", oplan.decisions[t.key].reason,
                                        None, t).outcomes()]
        outcomes += [Outcome(slug, "tls", "failed", deferred[t.key].reason)
                     for t in oplan.targets if t.key in deferred
                     for slug in t.agencies if slug not in failed]
        blocked = {t.key: failed_hosts(t, oplan.host_errors) for t in wanted}
        outcomes += [Outcome(slug, "tls", "failed", "not installed: cannot use host(s) "
                             f"{', '.join(blocked[t.key])} this run")
                     for t in wanted if blocked[t.key] for slug in t.agencies if slug not in failed]
        wanted = [t for t in wanted if not blocked[t.key]]
        if not wanted:
            return outcomes
        for name in sorted({i.host for t in wanted for i in t.installs}):
            self.pool.client(name)
        results = Issuer(self.inventory, self.pool.clients, self.dns,
                             ledger=self.ledger).obtain(wanted)
        self.report(f"tls: {sum(r.status == 'changed' for r in results)} certificate(s) issued")
        issued = {slug for r in results if r.status == "changed" for slug in r.target.agencies}
        activate = [a for a in oplan.agencies if a.slug in issued and a.slug not in failed
                    and not oplan.tls_ready.get(a.slug)]
        web = self._activate_https(oplan, activate, reloads, progress)
        renewed_hosts = sorted({a.host for a in oplan.agencies if a.slug in issued
                                and oplan.tls_ready.get(a.slug)} - {a.host for a in activate})
        for name in renewed_hosts:
            self.pool.client(name).reload_nginx()
            reloads[name] = reloads.get(name, 0) + 1
        served = served_problems(self.inventory, results)
        for result in results:
            for outcome in result.outcomes():
                problem = web.get(outcome.agency) or served.get(outcome.agency)
                outcomes.append(Outcome(outcome.agency, "tls", "failed", problem)
                                if problem and outcome.status == "changed" else outcome)
        return outcomes

    def _activate_https(self, oplan: OnboardPlan, agencies: Sequence[Agency],
                        reloads: dict[str, int], progress: ProgressCallback | None
                        ) -> dict[str, str]:
        """Second web run: the HTTPS vhost for agencies whose first certificate just arrived."""
        if not agencies:
            return {}
        outcomes = self._deploy(oplan, agencies, {a.slug: True for a in agencies}, reloads,
                                progress)
        return {o.agency: f"HTTPS vhost not activated: {o.detail}" for o in outcomes
                if o.status == "failed"}

    def verify(self, agencies: Sequence[Agency]) -> list[Outcome]:
        """The same checks as 'provisioner verify', concurrently."""
        if not agencies:
            return []
        targets = [verifying.agency_target(self.inventory, a) for a in agencies]
        limits = Limits(concurrency=VERIFY_CONCURRENCY, per_address=8, timeout=5.0,
                        extra_roots=())
        results = [result for result, _attempts in
                   verify_shard(self.inventory.settings, targets, limits)]
        active = sum(r.active for r in results)
        self.report(f"verify: {active}/{len(results)} active")
        return [_verify_outcome(r) for r in results]


def _verify_outcome(result: verifying.AgencyResult) -> Outcome:
    if result.active:
        return Outcome(result.agency, "verify", "ok", f"active: {result.url}")
    problems = "; ".join(reasons(result)[:3])
    return Outcome(result.agency, "verify", "failed", f"not active: {problems}")
