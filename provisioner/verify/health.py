"""The address gate: what one run knows about the web servers it connects to.

Every site's web checks go through ``AddressGate.enter(address)``. It keeps the
per-address limit (many agencies share one web server, and a sweep must not flood it)
and the run's "address health": when a site has held a slot for a whole step timeout,
its endpoint (address and port) gets one quick re-probe (connect, send a line, wait for
any byte or the close). When that finds the endpoint silent, every site queued on or
talking to it gets that verdict at once, and later ones (for a minute) never wait: forty
agencies on a dead shared host cost one timeout and a half, not forty. It also refuses,
for sites that ask (external agencies), loopback, private and link-local addresses.

The gate knows a site by the task verifying it (``SiteWatch``, registered by
verify.guard); a task it does not know is only limited.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from .model import CheckResult, Status

Endpoint = tuple[str, int]  # (address, port)
PROBE_LINE = b"HEAD / HTTP/1.0\r\n\r\n"  # any server answers something, or closes
DOWN_FOR = 60.0  # seconds a silent endpoint's verdict is given without trying it again
# The re-probe waits half a step timeout, but at least a second (up to the timeout): a
# server busy for a moment must not be taken for a dead one.
PROBE_FLOOR = 1.0


@dataclass(frozen=True)
class Stop:
    """Why a site's verification was stopped before it ended, as its verdict."""

    status: Status
    reason: str


class SiteStopped(Exception):
    """Raised inside a site's verification by the gate: the verdict is already known."""

    def __init__(self, stop: Stop):
        super().__init__(stop.reason)
        self.stop = stop


@dataclass(eq=False)  # one per site, known by identity
class SiteWatch:
    """One site's verification as the gate and the guard see it: its task, the port its
    checks use, whether inward addresses are refused, and its deadline."""

    port: int
    refuse_inward: bool
    budget: float  # seconds for the whole site, waiting for a slot not counted
    describe_step: Callable[[asyncio.Task], str]
    task: asyncio.Task | None = None
    stop: Stop | None = None
    done: list[CheckResult] | None = None  # the checks made before the gate (kept on a stop)
    started: float = field(default_factory=time.monotonic)
    _waited: float = 0.0
    _paused: float | None = None  # when the site started waiting for a slot
    _timer: asyncio.TimerHandle | None = None

    def remaining(self) -> float:
        return self.started + self._waited + self.budget - time.monotonic()

    def arm(self) -> None:
        """(Re)start the deadline timer for the time that is left."""
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, self.remaining()),
                                                            self._expire)

    def pause(self) -> None:
        """The site waits for a slot: time queued behind other sites of the same server
        is not the site's."""
        if self._timer is not None:
            self.disarm()
            self._paused = time.monotonic()

    def resume(self) -> None:
        if self._paused is not None:
            self._waited += time.monotonic() - self._paused
            self._paused = None
            self.arm()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def halt(self, stop: Stop) -> None:
        """Stop the site's task with this verdict (the first verdict wins)."""
        if self.stop is None and self.task is not None and not self.task.done():
            self.stop = stop
            self.task.cancel()

    def _expire(self) -> None:
        self._timer = None
        if self.task is not None and not self.task.done():
            step = self.describe_step(self.task)
            self.halt(Stop(Status.ERROR, f"no verdict within {self.budget:g}s "
                                         f"(deadline passed while {step})"))


def inward_kind(address: str) -> str | None:
    """What makes an address one a site outside must not send us to, else None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, yes in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                      ("unspecified", ip.is_unspecified), ("private", ip.is_private)):
        if yes:
            return kind
    return None


async def probe(address: str, port: int, wait: float) -> str | None:
    """None when the endpoint answers (any byte, a close or a refusal) within ``wait``
    seconds; else what it did instead."""
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        return f"no connection within {wait:g}s"
    except OSError:
        return None
    try:
        writer.write(PROBE_LINE)
        async with asyncio.timeout(wait):
            await reader.read(1)
        return None
    except TimeoutError:
        return f"connected, then silent for {wait:g}s"
    except OSError:
        return None
    finally:
        writer.transport.abort()


class AddressGate:
    """Slots per address, the health of endpoints, and the inward-address policy."""

    def __init__(self, per_address: int, timeout: float, allow_inward: bool = False,
                 probe_wait: float | None = None):
        self.per_address, self.timeout, self.allow_inward = per_address, timeout, allow_inward
        self.probe_wait = probe_wait if probe_wait is not None else \
            min(timeout, max(timeout / 2, PROBE_FLOOR))
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._watches: dict[asyncio.Task, SiteWatch] = {}
        self._on: dict[Endpoint, set[SiteWatch]] = defaultdict(set)
        self._down: dict[Endpoint, tuple[str, float]] = {}  # reason, monotonic time
        self._probing: set[Endpoint] = set()
        self._answered: dict[Endpoint, float] = {}  # monotonic time of the last good probe
        self._probes: set[asyncio.Task] = set()  # kept referenced while they run

    # ------------------------------------------------------------------ sites

    def watch(self, task: asyncio.Task, site: SiteWatch) -> None:
        site.task = task
        self._watches[task] = site

    def forget(self, task: asyncio.Task) -> None:
        self._watches.pop(task, None)

    @asynccontextmanager
    async def enter(self, address: str,
                    done: list[CheckResult] | None = None) -> AsyncIterator[None]:
        """Hold one of the address's slots while a site talks to it; raises SiteStopped
        when the site must not (inward) or need not (a silent endpoint) connect. ``done``:
        the site's checks so far, a list its verification goes on appending to, kept in
        its result if it is stopped."""
        site = self._watches.get(asyncio.current_task())  # type: ignore[arg-type]
        if site is None:
            async with self._slot(address):
                yield
            return
        site.done = done
        self._refuse_inward(address, site)
        endpoint = (address, site.port)
        self._raise_if_down(endpoint)
        self._on[endpoint].add(site)
        try:
            async with self._waiting(site, self._slot(address)):
                self._raise_if_down(endpoint)
                timer = asyncio.get_running_loop().call_later(self.timeout, self._suspect,
                                                              endpoint)
                try:
                    yield
                finally:
                    timer.cancel()
        finally:
            self._on[endpoint].discard(site)

    @staticmethod
    @asynccontextmanager
    async def _waiting(site: SiteWatch, slot: asyncio.Semaphore) -> AsyncIterator[None]:
        """Hold ``slot``; the site's deadline does not run while it waits for it."""
        site.pause()
        try:
            await slot.acquire()
        finally:
            site.resume()
        try:
            yield
        finally:
            slot.release()

    def _slot(self, address: str) -> asyncio.Semaphore:
        slot = self._slots.get(address)
        if slot is None:
            slot = self._slots[address] = asyncio.Semaphore(self.per_address)
        return slot

    def _refuse_inward(self, address: str, site: SiteWatch) -> None:
        kind = inward_kind(address) if site.refuse_inward and not self.allow_inward else None
        if kind:
            raise SiteStopped(Stop(Status.FAIL, f"refused: {address} is a {kind} address, "
                                                "not verified for an external site "
                                                "(verify_allow_private: true in "
                                                "group_vars/all.yml allows it)"))

    def _raise_if_down(self, endpoint: Endpoint) -> None:
        """A long sweep gives a server found silent another chance after DOWN_FOR."""
        down = self._down.get(endpoint)
        if down is not None and time.monotonic() - down[1] < DOWN_FOR:
            raise SiteStopped(Stop(Status.ERROR, down[0]))
        self._down.pop(endpoint, None)

    # ------------------------------------------------------------------ health

    def _suspect(self, endpoint: Endpoint) -> None:
        """A site held a slot for a whole step timeout: re-probe its endpoint once."""
        last = self._answered.get(endpoint)
        if endpoint in self._probing or endpoint in self._down or \
                (last is not None and time.monotonic() - last < self.timeout):
            return
        self._probing.add(endpoint)
        task = asyncio.get_running_loop().create_task(self._reprobe(endpoint))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _reprobe(self, endpoint: Endpoint) -> None:
        address, port = endpoint
        try:
            silent = await probe(address, port, self.probe_wait)
        finally:
            self._probing.discard(endpoint)
        if silent is None:
            self._answered[endpoint] = time.monotonic()
            return
        reason = (f"{address}:{port} does not answer: a site on it got no answer within "
                  f"{self.timeout:g}s, and a re-probe: {silent}")
        self._down[endpoint] = (reason, time.monotonic())
        for site in list(self._on.get(endpoint, ())):
            site.halt(Stop(Status.ERROR, reason))
