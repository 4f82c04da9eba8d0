"""The web step: agencies' site files and vhosts deployed through Ansible.

``deploy_sites`` ships each host's site files and vhosts in ONE transfer (a tar.gz
bundle inside the call of the ``provisioner_vhosts`` module: one task per host, tested
swap, one reload), then maps the run to one ``AgencyDeploy`` per agency.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..plan import Outcome
from ..registry.models import Agency, Inventory
from ..site import render as site
from .ansible import ansible_dirs, run_playbook
from .ansible_events import ProgressCallback, RunResult

DEPLOY_PLAYBOOK = "onboard.yml"
VHOST_MODULE = "provisioner_vhosts"
BUNDLE_SCHEMA = "provisioner/bundle/v1"


# =========================================================================== bundles


@dataclass(frozen=True)
class SiteBundle:
    """Everything one agency gets on its host: site files and vhost, rendered on the controller."""

    slug: str
    host: str
    site_dir: Path
    vhost_path: Path
    vhost: bytes
    files: Mapping[str, bytes] = field(repr=False)


def site_bundle(agency: Agency, inventory: Inventory, *, tls_ready: bool) -> SiteBundle:
    """Render one hosted agency with site.py (``tls_ready``: its certificate is installed)."""
    host = inventory.hosts[agency.host]
    return SiteBundle(
        slug=agency.slug,
        host=host.name,
        site_dir=site.site_dir(agency, host),
        vhost_path=site.vhost_path(agency, host),
        vhost=site.render_vhost(agency, host, inventory.settings, tls_ready=tls_ready),
        files=site.render_site(agency),
    )


def bundle_bytes(bundles: Sequence[SiteBundle]) -> bytes:
    """One host's bundle as a deterministic tar.gz (same input, same bytes)."""
    spec = {
        "schema": BUNDLE_SCHEMA,
        "manifest_path": site.MANIFEST_PATH,
        "agencies": [{"slug": b.slug, "site_dir": str(b.site_dir), "vhost_path": str(b.vhost_path)}
                     for b in sorted(bundles, key=lambda b: b.slug)],
    }
    members = {"bundle.json": json.dumps(spec, indent=2).encode()}
    for b in bundles:
        members[f"vhosts/{b.slug}.conf"] = b.vhost
        for rel, data in b.files.items():
            members[f"sites/{b.slug}/{rel}"] = data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


# =========================================================================== deploy


@dataclass(frozen=True)
class AgencyDeploy:
    slug: str
    host: str
    status: str  # changed, ok, failed
    reason: str | None
    vhost: str  # created, updated, unchanged, rejected, not applied
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept_edited: tuple[str, ...] = ()
    rejected_file: str | None = None
    drift_file: str | None = None  # where the hand-edited vhost it replaced was kept

    def outcome(self) -> Outcome:
        """The step's result for this agency in plan.py's common form (kind "web")."""
        return Outcome(self.slug, "web", self.status, self.reason if self.status == "failed"
                       else self.summary())

    def summary(self) -> str:
        parts = [f"vhost {self.vhost}"] if self.vhost in ("created", "updated") else []
        if self.drift_file:
            parts = [f"vhost restored (drift: the hand-edited copy is kept in {self.drift_file})"]
        for what, files in (("created", self.created), ("updated", self.updated),
                            ("removed", self.removed)):
            if files:
                parts.append(f"{len(files)} file{'s' if len(files) > 1 else ''} {what}")
        if self.kept_edited:
            n = len(self.kept_edited)
            parts.append(f"kept {n} file{'s' if n > 1 else ''} the agency edited: "
                         f"{', '.join(self.kept_edited)}")
        return ", ".join(parts) or "nothing to change"


@dataclass(frozen=True)
class HostDeploy:
    host: str
    reloaded: bool
    nginx_tests: int
    error: str | None


@dataclass(frozen=True)
class DeployReport:
    agencies: Mapping[str, AgencyDeploy]
    hosts: Mapping[str, HostDeploy]
    run: RunResult

    @property
    def failed(self) -> list[AgencyDeploy]:
        return [a for a in self.agencies.values() if a.status == "failed"]


def deploy_outcomes(run: RunResult, bundles: Sequence[SiteBundle]) -> DeployReport:
    """One outcome per agency from the run (pure): the module's own report when it ran,
    else the host's failure (unreachable, a task before it failed, the run never started)."""
    agencies: dict[str, AgencyDeploy] = {}
    hosts: dict[str, HostDeploy] = {}
    for host in sorted({b.host for b in bundles}):
        task = run.result_of(host, VHOST_MODULE)
        reported = (task.result.get("agencies") or {}) if task else {}
        error = None if reported else _host_error(run, host)
        hosts[host] = HostDeploy(host, bool(task and task.result.get("reloaded")),
                                 int(task.result.get("nginx_tests", 0)) if task else 0, error)
        for b in (b for b in bundles if b.host == host):
            agencies[b.slug] = _agency_deploy(b, reported.get(b.slug), error)
    return DeployReport(agencies=agencies, hosts=hosts, run=run)


def _host_error(run: RunResult, host: str) -> str:
    failure = run.failure_of(host)
    if failure is not None:
        what = "unreachable" if failure.unreachable else f"task '{failure.task}' failed"
        return f"host {host} {what}: {failure.message}"
    tail = f": {run.output_tail.splitlines()[-1]}" if run.output_tail.strip() else ""
    return f"ansible run {run.status} (rc {run.rc}) before reaching {host}{tail}"


def _agency_deploy(bundle: SiteBundle, reported: Mapping[str, Any] | None,
                   host_error: str | None) -> AgencyDeploy:
    if reported is None:
        return AgencyDeploy(bundle.slug, bundle.host, "failed",
                            host_error or f"no result for {bundle.slug} from {bundle.host}",
                            "not applied")
    files = reported.get("files") or {}
    return AgencyDeploy(
        slug=bundle.slug,
        host=bundle.host,
        status=reported.get("status", "failed"),
        reason=reported.get("reason"),
        vhost=reported.get("vhost", "not applied"),
        created=tuple(files.get("created", ())),
        updated=tuple(files.get("updated", ())),
        removed=tuple(files.get("removed", ())),
        kept_edited=tuple(files.get("kept_edited", ())),
        rejected_file=reported.get("rejected_file"),
        drift_file=reported.get("drift_file"),
    )


def deploy_sites(inventory: Inventory, bundles: Sequence[SiteBundle],
                 progress: ProgressCallback | None = None) -> DeployReport:
    """Ship and apply every bundle: one transfer and one module call per host, one reload."""
    slugs = [b.slug for b in bundles]
    if len(set(slugs)) != len(slugs):
        raise UsageError("an agency appears twice in one deploy")
    dirs = ansible_dirs(inventory)
    run_dir = dirs.bundles / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(mode=0o700, parents=True)
    try:
        by_host: dict[str, list[SiteBundle]] = {}
        for b in bundles:
            by_host.setdefault(b.host, []).append(b)
        for host, host_bundles in by_host.items():
            (run_dir / f"{host}.b64").write_bytes(base64.b64encode(bundle_bytes(host_bundles)))
        run = run_playbook(inventory, DEPLOY_PLAYBOOK, hosts=sorted(by_host),
                           extravars={"bundle_dir": str(run_dir)}, progress=progress)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return deploy_outcomes(run, bundles)
