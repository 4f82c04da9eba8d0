"""Load and validate the inventory: hosts.yml, group_vars/all.yml, agencies/*.yml.

Validation collects *every* problem before failing, so an operator fixes a whole
inventory in one pass. Each file's checks live with its kind (settings.py, hostvars.py,
agencies.py, on the field checks of fields.py); this module walks the inventory and
gathers what they find.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, Problem
from .agencies import load_agency_file
from .hostvars import load_hosts
from .models import Agency, Host, Inventory, Settings
from .settings import load_settings


def default_state_dir(inventory_dir: Path) -> Path:
    return inventory_dir.resolve().parent / "state"


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state dir 0700 (keys, archives and history live there)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    return state_dir


def load_inventory(inventory_dir: Path, state_dir: Path | None = None, *,
                   placement_only: bool = False) -> Inventory:
    """Load and validate the whole inventory; raise InputError with every problem found.

    ``placement_only``: every file is validated alike, but each agency keeps only where
    and how it is served (slug, names, host or external URL, record type, status), not
    what its site shows: a sweep of 10,000 agencies holds ~5 MB of them, not ~70 MB."""
    inventory_dir = Path(inventory_dir).resolve()
    state_dir = Path(state_dir).resolve() if state_dir else default_state_dir(inventory_dir)
    problems: list[Problem] = []
    if not inventory_dir.is_dir():
        raise InputError([Problem(inventory_dir, None, "inventory", "not a directory",
                                  "pass --inventory DIR or set PROVISIONER_INVENTORY")])
    variables = {"state_dir": str(state_dir), "inventory_dir": str(inventory_dir)}
    settings, hosts = None, {}
    for rel, loader in (("group_vars/all.yml", load_settings), ("hosts.yml", load_hosts)):
        path = inventory_dir / rel
        if not path.is_file():
            problems.append(Problem(path, None, "file", "missing",
                                    "run 'provisioner init DIR --zone ZONE' for a fresh inventory"))
            continue
        result, found = _guard(path, lambda p=path, f=loader: f(p, variables))
        problems += found
        if rel == "hosts.yml":
            hosts = result or {}
        else:
            settings = result
    agencies = _load_agencies(inventory_dir, settings, hosts, problems, placement_only)
    if problems:
        raise InputError(problems)
    assert settings is not None
    return Inventory(root=inventory_dir, state_dir=state_dir, settings=settings,
                     hosts={name: host for name, host in hosts.items() if host}, agencies=agencies)


def _load_agencies(inventory_dir: Path, settings: Settings | None, hosts: dict[str, Host],
                   problems: list[Problem], placement_only: bool = False) -> dict[str, Agency]:
    agency_dir = inventory_dir / "agencies"
    agencies: dict[str, Agency] = {}
    if not agency_dir.is_dir():
        problems.append(Problem(agency_dir, None, "agencies", "folder missing"))
        return agencies
    zone = settings.zone if settings else "invalid"
    by_fqdn: dict[str, Path] = {}
    for path in sorted(agency_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix not in (".yml", ".yaml"):
            problems.append(Problem(path, None, "file", "not a .yml file",
                                    "agency files are agencies/<slug>.yml"))
            continue
        agency, found = _guard(path, lambda p=path: load_agency_file(p, zone, hosts))
        problems += found
        if agency is None:
            continue
        if agency.slug in agencies:
            problems.append(Problem(path, None, "slug", f"duplicate slug {agency.slug!r}",
                                    f"also in {agencies[agency.slug].source.name}"))
        elif agency.fqdn in by_fqdn:
            problems.append(Problem(path, None, "subdomain", f"duplicate subdomain {agency.subdomain!r}",
                                    f"also used by {by_fqdn[agency.fqdn].name}"))
        else:
            agencies[agency.slug] = placement_of(agency) if placement_only else agency
            by_fqdn[agency.fqdn] = path
    return agencies


def placement_of(agency: Agency) -> Agency:
    """The agency without what its site shows (a sweep needs only where it is served)."""
    return dataclasses.replace(agency, description="", address="", phone="", email="",
                               opening_hours=(), head=None, maklumat="",
                               complaint_channels=(), services=())


def _guard(path: Path, load: Callable[[], tuple[Any, list[Problem]]]) -> tuple[Any, list[Problem]]:
    try:
        return load()
    except InputError as exc:
        return None, exc.problems
