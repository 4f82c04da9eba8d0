"""The host agents one run talks to: one connection per host, preflighted before use.

Every run that changes hosts (onboarding, offboarding, restore, backup) holds one
``HostPool``: a host is connected on first use and preflighted once (root, python,
nginx present and its config valid, free space); ``client`` hands out only hosts whose
preflight passed. Onboarding asks for the preflight itself first (``preflight``, with
the vhosts this run repairs) so that a host that fails it is reported with its agencies
and the other hosts go on. Every connection is closed with the pool.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import SafetyError
from ..registry.models import Host
from .agent import HostClient, Preflight


class HostPool:
    """Connected, preflighted ``HostClient``s by host name (use as a context manager)."""

    def __init__(self, hosts: Mapping[str, Host], known_hosts_file: Path):
        self._hosts = hosts
        self._known_hosts_file = known_hosts_file
        self._connected: dict[str, HostClient] = {}
        self._preflights: dict[str, Preflight] = {}
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()  # hosts are connected and preflighted in parallel

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def preflight(self, name: str, repairable: Iterable[Path] = ()) -> Preflight:
        """The host's preflight, run on its first use (``repairable``: drifted vhosts of
        ours this run restores, see ``HostClient.preflight``); HostError when the host
        cannot be reached."""
        if name not in self._preflights:
            client = self._connect(name)
            self._preflights[name] = client.preflight(repairable=repairable)
        return self._preflights[name]

    def client(self, name: str) -> HostClient:
        """The connected client of a host whose preflight passed (HostError when it cannot
        be reached, SafetyError naming the problems when its preflight fails)."""
        preflight = self.preflight(name)
        if not preflight.ok:
            raise SafetyError(f"host {name} cannot be used: " + "; ".join(preflight.problems),
                              hint="fix the host, then re-run; nothing was changed")
        return self._connected[name]

    @property
    def clients(self) -> dict[str, HostClient]:
        """The hosts used so far whose preflight passed."""
        return {name: self._connected[name] for name, preflight in self._preflights.items()
                if preflight.ok}

    def _connect(self, name: str) -> HostClient:
        if name not in self._connected:
            client = HostClient(self._hosts[name], self._known_hosts_file)
            client.connect()
            with self._lock:
                self._stack.callback(client.close)
                self._connected[name] = client
        return self._connected[name]
