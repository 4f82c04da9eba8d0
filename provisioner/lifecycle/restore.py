"""Restore: an offboarded (or lost) site back from its archive, then onboarded again.

The archive is verified against its checksum (or a backup's staged copy against its
manifest), the files are written back byte for byte (content, masked mode, mtime: an old
archive that recorded a setuid file does not bring back a setuid-root program), a file on
the host that differs from the archive is never overwritten, ``status: active`` is set
and the agency is onboarded (DNS record, vhost, a new certificate, verification). The
vhost is generated again by onboarding (the archived one names certificate files that no
longer exist); the result says whether it came out identical to the archived one.

A restore holds the inventory lock for the whole run and appends every change to the
audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import SafetyError, UsageError
from ..hosts.agent import SiteSnapshot
from ..hosts.ansible_events import ProgressCallback
from ..plan import Change, Outcome, Plan
from ..registry.load import load_inventory
from ..registry.models import Agency, Host
from ..safety.audit import current_operator
from ..site import render as site
from . import onboard as onboarding
from .archive import ArchivedSite, archived_mode, load_archive
from .registry_status import registry_change, set_registry_status
from .run import StepRun, StepsResult, utc_now

RESTORE_STEPS = ("site", "registry", "dns", "web", "tls", "verify", "vhost")


def restore_actions(manifest_files: Mapping[str, Mapping[str, Any]],
                    snapshot: SiteSnapshot) -> dict[str, str]:
    """Per archived file: create (absent), update (same content, other mode), noop
    (identical) or conflict (other content on the host: never overwritten)."""
    actions = {}
    for rel, entry in manifest_files.items():
        current = snapshot.files.get(rel)
        if current is None:
            actions[rel] = "create"
        elif current.sha256 != entry["sha256"]:
            actions[rel] = "conflict"
        else:
            actions[rel] = "noop" if current.mode == archived_mode(entry["mode"]) else "update"
    return actions


@dataclass(frozen=True)
class RestorePlan:
    archive: ArchivedSite
    agency: Agency
    host: Host
    actions: Mapping[str, str]  # archived path -> create / update / noop
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive.path), "agency": self.agency.slug,
                "host": self.host.name, "archived_host": self.archive.manifest["host"],
                "created_at": self.archive.manifest["created_at"],
                "changes": [c.to_dict() for c in self.plan], "counts": self.plan.counts()}


class Restoring(StepRun):
    """One restore: ``plan`` checks the archive and the host, ``apply`` writes the files
    back, marks the agency active and onboards it."""

    def plan(self, archive_path: Path) -> RestorePlan:
        return self.plan_archived(load_archive(archive_path))

    def plan_archived(self, archived: ArchivedSite) -> RestorePlan:
        """The plan for an archive already read and checked (a file, or a backup's copy)."""
        archive_path = archived.path
        slug = archived.agency
        agency = self.inventory.agencies.get(slug)
        if agency is None:
            raise UsageError(f"{archive_path}: agency {slug!r} is not in the inventory",
                             hint=f"put its registry file back (agencies/{slug}.yml) first")
        if agency.host is None:
            raise UsageError(f"{slug} is hosted elsewhere now ({agency.external_url})",
                             hint="set 'host:' in its registry file to restore it here")
        host = self.inventory.hosts[agency.host]
        snapshot = self.pool.client(host.name).site_snapshot(agency, content=False)
        actions = restore_actions(archived.manifest["files"], snapshot)
        conflicts = sorted(rel for rel, action in actions.items() if action == "conflict")
        if conflicts:
            raise SafetyError(f"{slug}: {len(conflicts)} file(s) on {host.name} differ from the "
                              f"archive and would be overwritten: {', '.join(conflicts[:5])}",
                              hint="move them away (or offboard the agency first); nothing "
                                   "was changed")
        counts = {a: sum(1 for v in actions.values() if v == a) for a in ("create", "update")}
        where = str(site.site_dir(agency, host))
        moved = f" (archived from {archived.manifest['host']})" \
            if archived.manifest["host"] != host.name else ""
        site_row = Change(slug, "site", "create" if counts["create"] else
                          "update" if counts["update"] else "noop", where,
                          new=tuple(f"{n} {a}" for a, n in counts.items() if n),
                          reason=(f"byte for byte from {archived.path.name}{moved}"
                                  if any(counts.values()) else "identical to the archive"))
        onboard_row = Change(slug, "onboard", "create", agency.fqdn,
                             reason="then onboarding: DNS record, vhost, a new certificate, "
                                    "verification")
        return RestorePlan(archived, agency, host, actions,
                           Plan((site_row, registry_change(agency, "active"), onboard_row)))

    def apply(self, rplan: RestorePlan, *,
              progress: ProgressCallback | None = None) -> StepsResult:
        """Files, registry, then onboarding (its outcomes included); the first failure
        stops the run."""
        slug = rplan.agency.slug
        outcomes: list[Outcome] = []

        def run(kind: str, step: Callable[[], Outcome]) -> bool:
            return self.run_step(slug, kind, rplan.plan.of_kind(kind), step, outcomes)

        if not (run("site", lambda: self._files(rplan)) and
                run("registry", lambda: self._registry(rplan))):
            return StepsResult(tuple(outcomes), rplan.archive.path, RESTORE_STEPS)
        inventory = load_inventory(self.inventory.root, self.inventory.state_dir)
        agency = inventory.agencies[slug]
        with onboarding.Session(inventory, self.report, audit_as=self.command) as session:
            result = session.apply(session.plan([agency]), progress=progress)
        outcomes += [o for o in result.outcomes if o.agency == slug]
        if not result.failed:
            run("vhost", lambda: self._compare_vhost(rplan, agency))
        return StepsResult(tuple(outcomes), rplan.archive.path, RESTORE_STEPS)

    def _files(self, rplan: RestorePlan) -> Outcome:
        written, same = self.pool.client(rplan.host.name).restore_site(
            rplan.agency, rplan.archive.site_files(), rplan.archive.manifest["dirs"])
        return Outcome(rplan.agency.slug, "site", "changed" if written else "ok",
                       f"{written} file(s) written, {same} already identical "
                       f"(from {rplan.archive.path.name})")

    def _registry(self, rplan: RestorePlan) -> Outcome:
        agency = rplan.agency
        note = (f"restored {utc_now():%Y-%m-%d} by {current_operator()} "
                f"from {rplan.archive.path.name}")
        if not set_registry_status(agency, "active", note):
            return Outcome(agency.slug, "registry", "ok", "already active")
        return Outcome(agency.slug, "registry", "changed", f"{agency.source}: status active")

    def _compare_vhost(self, rplan: RestorePlan, agency: Agency) -> Outcome:
        archived = rplan.archive.manifest["vhost"]
        now = self.pool.client(rplan.host.name).site_snapshot(agency, content=False).vhost
        if archived is None:
            return Outcome(agency.slug, "vhost", "ok", "generated (none was archived)")
        if now is not None and now.sha256 == archived["sha256"]:
            return Outcome(agency.slug, "vhost", "ok", "identical to the archived vhost")
        return Outcome(agency.slug, "vhost", "ok", "generated from the inventory; differs from "
                                                    "the archived one (the inventory changed)")
