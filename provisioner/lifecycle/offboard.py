"""Offboarding: archive an agency's site before anything is removed, then remove it.

Offboarding runs these steps in order; each must succeed before the next starts, so a
run that fails or is killed leaves a consistent state and a re-run finishes the job:

1. archive: the site folder and vhost are fetched in one round trip and written to
   ``<archive_dir>/<slug>-<UTC time>.tar.gz`` (0600, written atomically, its sha256 in
   ``<name>.sha256`` beside it, a manifest inside: agency, host, paths, file modes
   (masked: files at most 0644, folders 0755, never setuid/setgid/sticky),
   certificate serial, DNS records); the file is read back and every member compared
   with the hashes the host reported. An archive that already holds everything the
   host has is reused: a re-run never archives a half-removed site over a whole one;
2. dns: the records this inventory owns for the agency are deleted (one signed update,
   then every nameserver is checked); records it does not own are left alone. DNS goes
   first so that the name stops pointing at the host before the host stops serving it;
3. vhost: removed as a transaction (``nginx -t`` without it, put back when that fails,
   one reload), so nothing serves the site while its files go;
4. site: the site folder is deleted, after checking the archive still covers it;
5. cert: the agency's own certificate is revoked at the CA (``acme_revoke_on_offboard``)
   and its files deleted (a shared wildcard certificate stays);
6. registry: ``status: offboarded`` goes into agencies/<slug>.yml by a one-line edit
   that keeps every comment: the file stays, and the status is the last thing set.

Restore (bringing a site back from its archive) is ``restore.py``; the archive's format
is ``archive.py``. Offboarding holds the inventory lock for the whole run and appends
every change to the audit log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..dns.client import DEFAULT_PROPAGATION_TIMEOUT, PropagationTimeout
from ..dns.step import DnsPlan, apply_dns, plan_dns
from ..errors import ProvisionerError, SafetyError
from ..hosts.agent import HostClient, SiteSnapshot
from ..plan import Change, Outcome, Plan
from ..registry.models import Agency, Host, Inventory
from ..safety.audit import current_operator
from ..site import render as site
from ..tls.acme import revoke_certificate
from ..tls.certs import CertInfo, cert_info, records_dir
from ..tls.decisions import cert_targets
from . import access, access_plan
from .archive import (
    ARCHIVES_DIR,
    ArchivedSite,
    build_archive,
    check_received,
    covering_archive,
    load_archive,
    make_manifest,
    write_archive,
)
from .registry_status import registry_change, set_registry_status
from .run import StepRun, StepsResult, utc_now

OFFBOARD_STEPS = ("archive", "dns", "vhost", "site", "cert", "registry")


# =========================================================================== plans (pure)


def archive_change(agency: Agency, snapshot: SiteSnapshot | None, archived: Path | None,
                   directory: Path) -> Change:
    if snapshot is None:
        return Change(agency.slug, "archive", "noop", agency.fqdn,
                      reason="hosted elsewhere: no site on this inventory's hosts")
    if archived is not None:
        return Change(agency.slug, "archive", "noop", str(archived),
                      reason="already archived: the archive holds everything on the host")
    what = [f"{len(snapshot.files)} files, {snapshot.size} bytes"]
    if snapshot.vhost is not None:
        what.append("vhost")
    skipped = f"; not archived (not regular files): {', '.join(snapshot.skipped[:5])}" \
        if snapshot.skipped else ""
    return Change(agency.slug, "archive", "create", str(directory), new=tuple(what),
                  reason="written and verified before anything is removed" + skipped)


def removal_changes(agency: Agency, host: Host | None, snapshot: SiteSnapshot | None,
                    cert: CertInfo | None, cert_present: bool, shared_cert: bool,
                    revoke: bool) -> list[Change]:
    """The vhost, site and certificate rows of an offboarding plan."""
    slug = agency.slug
    if host is None or snapshot is None:
        return [Change(slug, kind, "noop", agency.fqdn, reason="hosted elsewhere")
                for kind in ("vhost", "site", "cert")]
    rows = [Change(slug, "vhost", "delete", str(site.vhost_path(agency, host)),
                   reason="nginx -t without it, then one reload")
            if snapshot.vhost else
            Change(slug, "vhost", "noop", str(site.vhost_path(agency, host)), reason="no vhost"),
            Change(slug, "site", "delete", str(site.site_dir(agency, host)),
                   old=(f"{len(snapshot.files)} files",), reason="after the archive is verified")
            if snapshot.exists else
            Change(slug, "site", "noop", str(site.site_dir(agency, host)),
                   reason="no site folder")]
    if shared_cert:
        rows.append(Change(slug, "cert", "noop", agency.fqdn,
                           reason="shared wildcard certificate: kept for the other agencies"))
    elif cert_present:
        serial = (f"serial {cert.serial_hex}",) if cert else ("unreadable",)
        how = "revoked at the CA, then its files deleted" if revoke and cert else \
            "files deleted (not revoked: acme_revoke_on_offboard is false)" if not revoke else \
            "files deleted (unreadable: cannot be revoked)"
        rows.append(Change(slug, "cert", "delete", agency.fqdn, old=serial, reason=how))
    else:
        rows.append(Change(slug, "cert", "noop", agency.fqdn, reason="no certificate installed"))
    return rows


@dataclass(frozen=True)
class OffboardPlan:
    agency: Agency
    host: Host | None  # None: hosted elsewhere
    archive_dir: Path
    snapshot: SiteSnapshot | None
    archived: Path | None  # an intact archive that already holds the host's content
    cert: CertInfo | None
    dns: DnsPlan
    plan: Plan

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes

    def to_dict(self) -> dict[str, Any]:
        return {"agency": self.agency.slug, "host": self.host.name if self.host else None,
                "archive_dir": str(self.archive_dir),
                "archived": str(self.archived) if self.archived else None,
                "cert_serial": self.cert.serial_hex if self.cert else None,
                "skipped": list(self.snapshot.skipped) if self.snapshot else [],
                "changes": [c.to_dict() for c in self.plan], "counts": self.plan.counts()}


# =========================================================================== the run


def _own_cert_dir(inventory: Inventory, agency: Agency, host: Host) -> Path | None:
    """The folder of the agency's own certificate; None when it shares a wildcard one.
    (Certificate targets exist only for hosted agencies: asked as if still active.)"""
    targets = cert_targets(inventory, [replace(agency, offboarded=False)])
    if not targets or targets[0].key != agency.slug:
        return None
    return site.cert_paths(agency, host, inventory.settings).fullchain.parent


def _cert_info(pem: str | None) -> CertInfo | None:
    if not pem:
        return None
    try:
        return cert_info(pem.encode())
    except ProvisionerError:
        return None



class Offboarding(StepRun):
    """One offboarding: ``plan`` reads (host, zone, archives), ``apply`` carries it out."""

    def plan(self, agency: Agency, archive_dir: Path) -> OffboardPlan:
        host = self.inventory.hosts[agency.host] if agency.host else None
        dns_plan = plan_dns(self.inventory, [agency], remove=True, preflight=True,
                            client=self.dns)
        snapshot = cert = archived = cert_dir = pem = None
        changes = [archive_change(agency, None, None, archive_dir)]
        if host is not None:
            client = self.pool.client(host.name)
            snapshot = client.site_snapshot(agency, content=False)
            covering = covering_archive(archive_dir, agency.slug, snapshot)
            archived = covering.path if covering else None
            cert_dir = _own_cert_dir(self.inventory, agency, host)
            pem = self._cert_pem(client, agency, host) if cert_dir else None
            cert = _cert_info(pem)
            changes = [archive_change(agency, snapshot, archived, archive_dir)]
        changes += list(dns_plan.plan)
        changes += removal_changes(agency, host, snapshot, cert,
                                   cert_present=bool(pem),
                                   shared_cert=host is not None and cert_dir is None,
                                   revoke=self.inventory.settings.acme.revoke_on_offboard)
        recorded = access.load_accounts(self.inventory.state_dir).get(agency.slug)
        if recorded is not None:  # removed in the site step, before the last comparison
            changes.append(Change(agency.slug, "access", "delete", recorded.account,
                                  reason=f"SFTP account on {recorded.host}"))
        changes.append(registry_change(agency, "offboarded"))
        return OffboardPlan(agency, host, archive_dir, snapshot, archived, cert, dns_plan,
                            Plan(changes))

    def _cert_pem(self, client: HostClient, agency: Agency, host: Host) -> str | None:
        fullchain = site.cert_paths(agency, host, self.inventory.settings).fullchain
        return client.certificates([fullchain])[fullchain]

    def apply(self, oplan: OffboardPlan, *,
              propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT) -> StepsResult:
        """Run the steps in order; the first failure stops the run (a re-run resumes)."""
        state = _OffboardState(oplan, propagation_timeout)
        steps = {"archive": self._archive, "dns": self._dns, "vhost": self._vhost,
                 "site": self._site, "cert": self._cert, "registry": self._registry}
        outcomes: list[Outcome] = []
        for kind in OFFBOARD_STEPS:
            if not self.run_step(oplan.agency.slug, kind, oplan.plan.of_kind(kind),
                                 functools.partial(steps[kind], state), outcomes):
                break
        return StepsResult(tuple(outcomes), state.archive.path if state.archive else None,
                           OFFBOARD_STEPS)

    # ------------------------------------------------------------------ steps

    def _archive(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "archive", "ok", "hosted elsewhere: nothing to archive")
        snapshot = self.pool.client(oplan.host.name).site_snapshot(oplan.agency, content=True)
        state.archive = covering_archive(oplan.archive_dir, slug, snapshot)
        if state.archive is not None:
            return Outcome(slug, "archive", "ok", f"already archived in {state.archive.path}")
        check_received(snapshot, oplan.host.name)
        now = utc_now()
        manifest = make_manifest(oplan.agency, oplan.host, snapshot, oplan.cert, oplan.dns, now,
                                 self.command)
        data = build_archive(manifest, {rel: f.data for rel, f in snapshot.files.items()},
                             snapshot.vhost.data if snapshot.vhost else None)
        path = write_archive(oplan.archive_dir, slug, now, data)
        written = load_archive(path)  # read back from disk: checksum and every member
        if not written.covers(snapshot):
            raise ProvisionerError(f"archive {path} does not match what the host has",
                                   hint="re-run; nothing was removed")
        state.archive = written
        return Outcome(slug, "archive", "changed",
                       f"{path} ({len(snapshot.files)} files, {len(data)} bytes, verified)")

    def _dns(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if not oplan.dns.plan.has_changes:
            return self._dns_in_sync(state)
        result = apply_dns(self.inventory, oplan.dns, client=self.dns,
                           propagation_timeout=state.propagation_timeout)
        return next((o for o in result.outcomes if o.agency == slug),
                    Outcome(slug, "dns", "ok", "records up to date"))

    def _dns_in_sync(self, state: _OffboardState) -> Outcome:
        """Nothing to delete at the primary: still, every nameserver must have caught up
        with it (a re-run after a propagation timeout checks the lagging server again)."""
        slug = state.plan.agency.slug
        kept = [c.reason for c in state.plan.dns.plan if "not ours" in c.reason]
        serial = self.dns.soa_serial()
        try:
            self.dns.wait_for_propagation([], serial, timeout=state.propagation_timeout)
        except PropagationTimeout as exc:
            return Outcome(slug, "dns", "failed", f"no records to delete, but {exc}")
        return Outcome(slug, "dns", "ok", (kept[0] if kept else "no records owned here")
                       + f"; every nameserver serves serial {serial}")

    def _vhost(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "vhost", "ok", "hosted elsewhere")
        removed = self.pool.client(oplan.host.name).remove_vhost(oplan.agency)
        return Outcome(slug, "vhost", "changed" if removed else "ok",
                       "removed (nginx -t passed, reloaded)" if removed else "no vhost")

    def _site(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "site", "ok", "hosted elsewhere")
        client = self.pool.client(oplan.host.name)
        removed = self._remove_access(oplan.agency)  # no upload lands after the check below
        current = client.site_snapshot(oplan.agency, content=False)
        if current.files and (state.archive is None or not state.archive.covers(current)):
            raise SafetyError("the site changed after it was archived: not removed",
                              hint="re-run: the new content is archived first")
        entries = client.remove_tree(site.site_dir(oplan.agency, oplan.host),
                                     oplan.host.web_root)
        if entries is None:
            return Outcome(slug, "site", "changed" if removed else "ok",
                           removed + "no site folder")
        return Outcome(slug, "site", "changed", f"{removed}deleted {entries} entries")

    def _remove_access(self, agency: Agency) -> str:
        """The agency's SFTP account goes (its host's drop-in rewritten without it); what
        was done, as the start of the site step's detail."""
        state_dir = self.inventory.state_dir
        recorded = access.load_accounts(state_dir)
        if agency.slug not in recorded:
            return ""
        host_name = recorded[agency.slug].host
        wanted = access_plan.host_access(self.inventory, host_name, recorded,
                                         leaving=[agency.slug])
        self.pool.client(host_name).content_access(wanted.request())
        access.save_accounts(state_dir, wanted.recorded(recorded))
        return f"SFTP account {recorded[agency.slug].account} removed; "

    def _cert(self, state: _OffboardState) -> Outcome:
        oplan, agency = state.plan, state.plan.agency
        if oplan.host is None:
            return Outcome(agency.slug, "cert", "ok", "hosted elsewhere")
        cert_dir = _own_cert_dir(self.inventory, agency, oplan.host)
        if cert_dir is None:
            return Outcome(agency.slug, "cert", "ok", "shared wildcard certificate kept")
        client = self.pool.client(oplan.host.name)
        pem = self._cert_pem(client, agency, oplan.host)
        done = []
        if pem and _cert_info(pem) and self.inventory.settings.acme.revoke_on_offboard:
            done.append(revoke_certificate(self.inventory, pem))
        if client.remove_tree(cert_dir, oplan.host.tls_dir) is not None:
            done.append(f"deleted {cert_dir}")
        record = records_dir(self.inventory.state_dir) / f"{agency.slug}.json"
        if record.exists():
            record.unlink()
            done.append("controller record removed")
        return Outcome(agency.slug, "cert", "changed" if done else "ok",
                       "; ".join(done) or "no certificate installed")

    def _registry(self, state: _OffboardState) -> Outcome:
        agency = state.plan.agency
        name = state.archive.path.name if state.archive else "none"
        note = f"{utc_now():%Y-%m-%d} by {current_operator()}, archive {name}"
        if not set_registry_status(agency, "offboarded", note):
            return Outcome(agency.slug, "registry", "ok", "already offboarded")
        return Outcome(agency.slug, "registry", "changed", f"{agency.source}: status offboarded")


@dataclass
class _OffboardState:
    plan: OffboardPlan
    propagation_timeout: float
    archive: ArchivedSite | None = None


def archive_dir_of(inventory: Inventory, given: Path | None) -> Path:
    return (given or inventory.state_dir / ARCHIVES_DIR).resolve()
