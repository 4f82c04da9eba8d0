"""``provisioner doctor``'s run: every check, hosts, DNS and ACME side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..registry.models import Inventory
from .acme import check_acme
from .checks import Check, DoctorReport
from .dns import check_dns
from .hosts import check_host


def run(inventory: Inventory) -> DoctorReport:
    """Every check, hosts, DNS and ACME side by side; in a stable order."""
    groups: list[Callable[[], list[Check]]] = [
        *(lambda h=h: check_host(inventory, h) for h in inventory.hosts.values()),
        lambda: check_dns(inventory), lambda: check_acme(inventory)]
    with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
        found = list(pool.map(lambda group: group(), groups))
    return DoctorReport(tuple(check for group in found for check in group))
