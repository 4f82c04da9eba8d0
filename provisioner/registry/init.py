"""`provisioner init`: a fresh inventory for another regency, with commented examples."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..errors import UsageError
from ..paths import TEMPLATES_DIR
from .fields import is_hostname

TEMPLATES = TEMPLATES_DIR / "init"
FILES = {"hosts.yml": "hosts.yml.j2", "group_vars/all.yml": "all.yml.j2",
         "agencies/contoh.yml": "agency.yml.j2"}


def render_inventory(zone: str) -> dict[str, str]:
    """The files of a new inventory, by path relative to its folder (pure)."""
    if not is_hostname(zone) or "." not in zone:
        raise UsageError(f"--zone: not a valid DNS zone: {zone!r}", hint="e.g. paserkab.go.id")
    zone = zone.rstrip(".").lower()
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)
    inventory_id = zone.split(".")[0] + "-provisioner"
    return {rel: env.get_template(name).render(zone=zone, inventory_id=inventory_id)
            for rel, name in FILES.items()}


def create_inventory(directory: Path, zone: str) -> list[Path]:
    """Write a new inventory; refuses a folder that already has files."""
    files = render_inventory(zone)
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory}: folder is not empty",
                         hint="choose a new folder; init never overwrites an inventory")
    written = []
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
