"""Agencies' SFTP accounts per host: what the agency files ask for, compared with what a
host has (the plan rows), and the host agent's request that converges it (issue 17)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Mapping

from ..errors import UsageError
from ..plan import Change
from ..registry.models import Agency, Host, Inventory
from ..site import render as site
from .access import (
    AccessInfo,
    AccessKeyError,
    Recorded,
    SftpAccount,
    assign_account,
    converge_request,
    host_key_fingerprints,
    keys_file,
    load_accounts,
    parse_public_key,
    sshd_drop_in,
)


@dataclass(frozen=True)
class HostAccess:
    """What one host's SFTP accounts should be: ``keep`` (the drop-in names exactly
    these) and ``remove`` (recorded accounts no agency on the host asks for any more)."""

    host: Host
    keep: tuple[SftpAccount, ...]
    remove: tuple[SftpAccount, ...]

    @property
    def names(self) -> list[str]:
        return [a.name for a in (*self.keep, *self.remove)]

    def request(self) -> dict:
        return converge_request(self.keep, self.remove, PurePosixPath(self.host.web_root),
                                self.host.sshd, site.MANIFEST_PATH)

    def recorded(self, before: Mapping[str, Recorded]) -> dict[str, Recorded]:
        """The state file's records once this host is converged."""
        after = {slug: r for slug, r in before.items() if r.host != self.host.name}
        after.update({a.slug: Recorded(a.name, self.host.name) for a in self.keep})
        return after


def wants_access(agency: Agency, host_name: str) -> bool:
    return agency.hosted and agency.host == host_name and bool(agency.content_access)


def host_access(inventory: Inventory, host_name: str, recorded: Mapping[str, Recorded],
                leaving: Iterable[str] = ()) -> HostAccess:
    """The accounts of one host from the agency files (``leaving``: slugs being
    offboarded, whose accounts go whatever their files say)."""
    host = inventory.hosts[host_name]
    leaving = set(leaving)
    names = {slug: r.account for slug, r in recorded.items()}
    keep = []
    for agency in sorted(inventory.agencies.values(), key=lambda a: a.slug):
        if not wants_access(agency, host_name) or agency.slug in leaving:
            continue
        if agency.slug in recorded and recorded[agency.slug].host != host_name:
            del names[agency.slug]  # moved hosts: the old host's account is removed there
        name = assign_account(agency.slug, names)
        names[agency.slug] = name
        keys = tuple(parse_public_key(line) for line in agency.content_access)
        keep.append(SftpAccount(agency.slug, name,
                                PurePosixPath(site.site_dir(agency, host)), keys))
    kept = {a.slug for a in keep}
    remove = [SftpAccount(slug, r.account, PurePosixPath(host.web_root) / slug, ())
              for slug, r in sorted(recorded.items())
              if r.host == host_name and slug not in kept]
    return HostAccess(host, tuple(keep), tuple(remove))


def _fingerprints(keys_text: str | None) -> tuple[str, ...]:
    found = []
    for line in (keys_text or "").splitlines():
        try:
            found.append(parse_public_key(line).fingerprint)
        except AccessKeyError:
            found.append("(unreadable line)")
    return tuple(found)


def access_changes(plan: HostAccess, facts: Mapping) -> list[Change]:
    """The plan rows, from the agent's ``content_access_facts`` answer."""
    changes = []
    for account in plan.keep:
        fact = facts["accounts"][account.name]
        new = tuple(k.fingerprint for k in account.keys)
        if not fact["exists"]:
            changes.append(Change(account.slug, "access", "create", account.name, new=new,
                                  reason="SFTP account"))
        elif fact["keys"] != keys_file(account):
            changes.append(Change(account.slug, "access", "update", account.name,
                                  old=_fingerprints(fact["keys"]), new=new, reason="keys"))
    for account in plan.remove:
        fact = facts["accounts"][account.name]
        if fact["exists"] or fact["keys"] is not None:
            changes.append(Change(account.slug, "access", "delete", account.name,
                                  old=_fingerprints(fact["keys"]), reason="SFTP account"))
    wanted = sshd_drop_in(plan.keep, plan.host.sshd.keys_dir)
    if not changes and (facts["drop_in"] or sshd_drop_in((), plan.host.sshd.keys_dir)) != wanted:
        changes.append(Change(f"host {plan.host.name}", "access", "update",
                              str(plan.host.sshd.drop_in), reason="sshd drop-in"))
    return changes


def access_info(inventory: Inventory, agency: Agency) -> AccessInfo:
    """What ``provisioner access`` tells the agency; UsageError when it has no account."""
    recorded = load_accounts(inventory.state_dir).get(agency.slug)
    if not agency.content_access or recorded is None or recorded.host != agency.host:
        raise UsageError(f"{agency.source}: content_access: {agency.slug} has no SFTP "
                         f"account on its host yet",
                         hint=f"list its staff's keys under content_access.keys, then "
                              f"'provisioner onboard {agency.slug}'")
    host = inventory.hosts[agency.host]
    fingerprints = host_key_fingerprints(inventory.settings.known_hosts_file,
                                         host.ssh_address, host.ssh_port)
    keys = tuple(parse_public_key(line) for line in agency.content_access)
    return AccessInfo(agency.slug, agency.fqdn, host.fqdn or host.public_ipv4, host.ssh_port,
                      recorded.account, tuple(fingerprints),
                      tuple(f"{k.fingerprint} {k.comment}".strip() for k in keys))
