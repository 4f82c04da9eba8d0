"""The loopback addresses the lab's servers listen on: added to lo when missing, recorded
at once in the lab's state file (run/addresses.json), and only those removed again."""

from __future__ import annotations

import json
import subprocess

from ..errors import LabError
from .keys import write_file
from .layout import LabPaths


def _ip(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise LabError("loopback", "the 'ip' command is missing",
                       hint="apt-get install iproute2") from None


def loopback_addresses() -> set[str]:
    result = _ip("-j", "-4", "addr", "show", "dev", "lo")
    if result.returncode != 0:
        raise LabError("loopback", f"'ip addr show dev lo' failed: {result.stderr.strip()}")
    return {info["local"] for iface in json.loads(result.stdout or "[]")
            for info in iface.get("addr_info", []) if "local" in info}


def add_loopback(address: str) -> None:
    result = _ip("addr", "add", f"{address}/32", "dev", "lo")
    if result.returncode != 0 and "File exists" not in result.stderr:
        raise LabError("loopback", f"cannot add {address} to lo: {result.stderr.strip()}",
                       hint="the lab needs root (CAP_NET_ADMIN) to add loopback addresses")


def remove_loopback(address: str) -> None:
    result = _ip("addr", "del", f"{address}/32", "dev", "lo")
    if result.returncode != 0 and "Cannot assign" not in result.stderr:
        raise LabError("loopback", f"cannot remove {address} from lo: {result.stderr.strip()}")


def _recorded_addresses(paths: LabPaths) -> list[str]:
    try:
        return list(json.loads(paths.addresses_file.read_text())["added"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def ensure_addresses(paths: LabPaths, wanted: list[str]) -> list[str]:
    present = loopback_addresses()
    recorded = _recorded_addresses(paths)
    added = []
    for address in wanted:
        if address != "127.0.0.1" and address not in present:
            add_loopback(address)
            added.append(address)
            # Record at once: a later failure must not orphan the address.
            write_file(paths.addresses_file,
                       json.dumps({"added": sorted(set(recorded + added))}) + "\n")
    return added


def remove_addresses(paths: LabPaths) -> list[str]:
    present = loopback_addresses()
    removed = []
    for address in _recorded_addresses(paths):
        if address in present:
            remove_loopback(address)
            removed.append(address)
    paths.addresses_file.unlink(missing_ok=True)
    return removed
