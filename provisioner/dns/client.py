"""The provisioning side of the toolkit's DNS: ``DnsClient`` asks the inventory's zone
servers what they serve, transfers the zone (AXFR) and sends RFC 2136 updates signed
with the TSIG key (tsig.py), then polls every authoritative server until the update has
propagated (through querier.py's ``Querier``), all through dnspython. Every dnspython or
socket failure leaves it as ``DNSError`` naming the server and the DNS name. Everything
returned is plain data (``Answer`` of answer.py, ``ZoneState``, ``PropagationReport``)
so planning and judging stay pure.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import dns.exception
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.serial
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from ..errors import DNSError
from ..registry.models import Nameserver, Settings
from .answer import (
    Answer,
    RRset,
    absolute_name,
    normalize_name,
    query_message,
    read_answer,
    rrset_from,
)
from .querier import Querier
from .tsig import TsigKey, load_tsig_key

DEFAULT_TIMEOUT = 3.0  # seconds for one query, update or transfer read
DEFAULT_PROPAGATION_TIMEOUT = 10.0
PROPAGATION_INTERVAL = 0.2
PREREQUISITE_FAILURES = ("YXDOMAIN", "YXRRSET", "NXDOMAIN", "NXRRSET")
MAX_PARALLEL_QUERIES = 64


@dataclass(frozen=True)
class ZoneState:
    """What a server serves for a zone: name (lowercase, no final dot) -> type -> RRset."""

    zone: str
    serial: int
    records: Mapping[str, Mapping[str, RRset]]

    def at(self, name: str) -> Mapping[str, RRset]:
        return self.records.get(name.lower().rstrip("."), {})


@dataclass(frozen=True)
class Prerequisite:
    """An RFC 2136 prerequisite: "equals" (the rrset is exactly ``values``), "rrset-absent"
    or "name-absent"."""

    condition: str
    name: str
    rdtype: str = ""
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    """An update operation: "replace" an rrset with values, or "delete" it."""

    action: str
    name: str
    rdtype: str
    ttl: int = 0
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpdateBatch:
    zone: str
    prerequisites: tuple[Prerequisite, ...]
    operations: tuple[Operation, ...]


@dataclass(frozen=True)
class Expectation:
    """What every authoritative server must serve after an update (no values: nothing)."""

    name: str
    rdtype: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ServerSync:
    server: str
    address: str
    serial: int | None
    in_sync: bool
    lagging: tuple[str, ...] = ()  # what this server does not serve yet
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "address": self.address, "serial": self.serial,
                "in_sync": self.in_sync, "lagging": list(self.lagging), "error": self.error}


@dataclass(frozen=True)
class PropagationReport:
    serial: int
    servers: tuple[ServerSync, ...]
    seconds: float

    @property
    def in_sync(self) -> bool:
        return all(s.in_sync for s in self.servers)

    def lagging(self) -> list[ServerSync]:
        return [s for s in self.servers if not s.in_sync]

    def summary(self) -> str:
        return "; ".join(_lag_text(s) for s in self.lagging()) or "every server in sync"

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "in_sync": self.in_sync, "seconds": self.seconds,
                "servers": [s.to_dict() for s in self.servers]}


def _lag_text(sync: ServerSync) -> str:
    if sync.error:
        return f"{sync.server}: {sync.error}"
    return f"{sync.server}: " + ", ".join(sync.lagging)


class PropagationTimeout(DNSError):
    """The bound was hit before every authoritative server served the update."""

    def __init__(self, zone: str, report: PropagationReport):
        names = ", ".join(s.server for s in report.lagging())
        super().__init__(names, zone, f"not in sync {report.seconds:.1f} s after the update "
                                      f"({report.summary()})",
                         hint="check the secondary's transfer from the primary (NOTIFY, "
                              "allow-transfer, logs); re-run to check again")
        self.report = report


def server_label(server: Nameserver) -> str:
    port = "" if server.port == 53 else f":{server.port}"
    return f"{server.name}@{server.address}{port}"


class DnsClient:
    """Queries, transfers and signed updates for the inventory's zone.

    ``sent`` counts the messages sent by kind ("query", "transfer", "update",
    "preflight"), so callers and tests can see that a batch was one update.
    """

    def __init__(self, settings: Settings, timeout: float = DEFAULT_TIMEOUT):
        self.settings = settings
        self.zone = settings.zone
        self.primary = settings.primary
        self.timeout = timeout
        self.sent: Counter[str] = Counter()
        self._key: TsigKey | None = None

    # ------------------------------------------------------------------ key

    @property
    def key(self) -> TsigKey:
        """The TSIG key, read on first use (queries need none)."""
        if self._key is None:
            self._key = load_tsig_key(self.settings.tsig_key_file)
        return self._key

    @contextmanager
    def _errors(self, server: Nameserver, name: str) -> Iterator[None]:
        """Turn dnspython and socket failures into one DNSError naming server and name."""
        label = server_label(server)
        try:
            yield
        except DNSError:
            raise
        except dns.exception.Timeout:
            raise DNSError(label, name, f"no answer within {self.timeout:g} s",
                           hint="is the server running and reachable?") from None
        except ConnectionRefusedError:
            raise DNSError(label, name, "connection refused",
                           hint="is the server running? check its address in "
                                "group_vars/all.yml") from None
        except dns.tsig.PeerBadKey:
            raise DNSError(label, name, f"the server does not know TSIG key "
                                        f"{self.key.name!r} (BADKEY)",
                           hint="check that tsig_key_file holds the key named in the "
                                "server's configuration") from None
        except dns.tsig.PeerBadSignature:
            raise DNSError(label, name, f"the server rejected the signature of TSIG key "
                                        f"{self.key.name!r} (BADSIG: wrong secret?)",
                           hint="check that tsig_key_file holds the secret the server "
                                "has for this key") from None
        except dns.tsig.PeerBadTime:
            raise DNSError(label, name, "the server rejected the TSIG time (BADTIME)",
                           hint="check the clocks of this machine and the server") from None
        except dns.xfr.TransferError as exc:
            raise DNSError(label, name, f"zone transfer refused for TSIG key "
                                        f"{self.key.name!r} ({dns.rcode.to_text(exc.rcode)})",
                           hint=f"allow the key to transfer the zone (BIND: allow-transfer "
                                f"{{ key \"{self.key.name}\"; }}; PowerDNS: zone metadata "
                                f"TSIG-ALLOW-AXFR {self.key.name})") from None
        except dns.exception.FormError as exc:
            if "requires a TSIG" not in str(exc):
                raise DNSError(label, name, f"FormError: {exc}") from None
            # PowerDNS answers a query whose key it refuses with an unsigned error.
            raise DNSError(label, name, f"the server answered unsigned: it did not accept "
                                        f"TSIG key {self.key.name!r} (unknown name or wrong "
                                        f"secret)",
                           hint="check that tsig_key_file holds the key, name and secret, "
                                "the server has") from None
        except dns.exception.TooBig:
            raise DNSError(label, name, "the update does not fit in one DNS message (64 KiB, "
                                        "about 300 agencies)",
                           hint="apply the agencies in smaller groups by naming them") from None
        except OSError as exc:
            raise DNSError(label, name, f"network error: {exc.strerror or exc}") from None
        except dns.exception.DNSException as exc:
            raise DNSError(label, name, f"{type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ queries

    def query(self, server: Nameserver, name: str, rdtype: str) -> Answer:
        """Ask one server, recursion off, what it serves for (name, rdtype); raises DNSError
        unless it answers with authority (NOERROR or NXDOMAIN)."""
        with self._errors(server, name):
            self.sent["query"] += 1
            response, _ = dns.query.udp_with_fallback(
                query_message(name, rdtype), server.address, timeout=self.timeout,
                port=server.port, ignore_unexpected=True)
        answer = read_answer(server, name, rdtype, response)
        if answer.unusable:
            raise DNSError(server_label(server), name, answer.unusable,
                           hint=f"is this server authoritative for {self.zone}?"
                           if not answer.authoritative else None)
        return answer

    def soa_serial(self, server: Nameserver | None = None) -> int:
        server = server or self.primary
        serial = self.query(server, self.zone, "SOA").serial
        if serial is None:
            raise DNSError(server_label(server), self.zone, "no SOA record: not serving the zone")
        return serial

    def authoritative_servers(self) -> tuple[Nameserver, ...]:
        """The zone's NS set at the primary, with addresses from the settings or the glue."""
        names = self.query(self.primary, self.zone, "NS").names
        if not names:
            raise DNSError(server_label(self.primary), self.zone, "the zone has no NS records")
        known = {normalize_name(ns.name): ns for ns in self.settings.nameservers}
        return tuple(known.get(target) or self._from_glue(target) for target in names)

    def _from_glue(self, target: str) -> Nameserver:
        glue = self.query(self.primary, target, "A")
        if glue.rrset is None:
            raise DNSError(server_label(self.primary), target,
                           "no address for this nameserver of the zone",
                           hint="add it to 'nameservers' in group_vars/all.yml")
        return Nameserver(name=target, address=glue.rrset.values[0])

    # ------------------------------------------------------------------ transfer and update

    def transfer(self) -> ZoneState:
        """AXFR the zone from the primary, signed with the key."""
        zone = dns.zone.Zone(absolute_name(self.zone), relativize=False)
        with self._errors(self.primary, self.zone):
            query, _ = dns.xfr.make_query(zone)
            query.use_tsig(self.key.dnspython_key())
            self.sent["transfer"] += 1
            dns.query.inbound_xfr(self.primary.address, zone, query=query,
                                  port=self.primary.port, timeout=self.timeout,
                                  lifetime=self.timeout * 10)
            soa = zone.get_soa()
        records: dict[str, dict[str, RRset]] = {}
        for name, rdataset in zone.iterate_rdatasets():
            records.setdefault(normalize_name(name), {})[
                dns.rdatatype.to_text(rdataset.rdtype)] = rrset_from(rdataset)
        return ZoneState(self.zone, soa.serial, records)

    def check_update_access(self) -> None:
        """Preflight: an empty signed update (BIND answers NOERROR and changes nothing)."""
        self._send_update(dns.update.UpdateMessage(absolute_name(self.zone)), "preflight")

    def update(self, batch: UpdateBatch) -> None:
        """Send the whole batch as one signed update; prerequisites make it all-or-nothing."""
        self._send_update(update_message(batch), "update")

    def update_rcode(self, batch: UpdateBatch, kind: str = "preflight") -> str:
        """Send the batch signed and return the server's rcode, whatever it is ('provisioner
        doctor' sends one whose prerequisite fails: it changes nothing, and a prerequisite
        failure shows the server verified the key). TSIG and network failures raise."""
        return self._signed_rcode(update_message(batch), kind)

    def _signed_rcode(self, message: dns.update.UpdateMessage, kind: str) -> str:
        with self._errors(self.primary, self.zone):
            message.use_tsig(self.key.dnspython_key())
            self.sent[kind] += 1
            response = dns.query.tcp(message, self.primary.address, timeout=self.timeout,
                                     port=self.primary.port)
        return dns.rcode.to_text(response.rcode())

    def _send_update(self, message: dns.update.UpdateMessage, kind: str) -> None:
        rcode = self._signed_rcode(message, kind)
        if rcode == "NOERROR":
            return
        label = server_label(self.primary)
        if rcode in PREREQUISITE_FAILURES:
            raise DNSError(label, self.zone, f"records changed since the plan ({rcode}); "
                                             "nothing was changed",
                           hint="run 'provisioner plan' again and review the new plan")
        if rcode == "REFUSED":
            raise DNSError(label, self.zone, f"TSIG key {self.key.name!r} may not update "
                                             "the zone (REFUSED)",
                           hint="allow the key in the zone's allow-update / update-policy")
        raise DNSError(label, self.zone, f"update failed ({rcode})")

    # ------------------------------------------------------------------ propagation

    def wait_for_propagation(self, expectations: Sequence[Expectation], serial: int, *,
                             servers: Sequence[Nameserver] | None = None,
                             timeout: float = DEFAULT_PROPAGATION_TIMEOUT,
                             interval: float = PROPAGATION_INTERVAL) -> PropagationReport:
        """Poll every authoritative server until it serves ``serial`` and the expected records.

        Returns the per-server report; raises PropagationTimeout (naming the lagging
        servers) when ``timeout`` seconds pass first.
        """
        servers = tuple(servers or self.authoritative_servers())
        started = time.monotonic()
        while True:
            syncs = asyncio.run(self._check_servers(servers, expectations, serial))
            report = PropagationReport(serial, syncs, round(time.monotonic() - started, 3))
            if report.in_sync:
                return report
            if time.monotonic() - started + interval > timeout:
                raise PropagationTimeout(self.zone, report)
            time.sleep(interval)

    async def _check_servers(self, servers: Sequence[Nameserver],
                             expectations: Sequence[Expectation],
                             serial: int) -> tuple[ServerSync, ...]:
        limit = asyncio.Semaphore(MAX_PARALLEL_QUERIES)
        querier = Querier(self.timeout, lambda address: limit)
        try:
            return tuple(await asyncio.gather(
                *(self._check_server(querier, s, expectations, serial) for s in servers)))
        finally:
            await querier.aclose()

    async def _check_server(self, querier: Querier, server: Nameserver,
                            expectations: Sequence[Expectation], serial: int) -> ServerSync:
        label = f"{server.address}:{server.port}"
        self.sent["query"] += 1 + len(expectations)
        soa = await querier.ask(server, self.zone, "SOA")
        if soa.unusable:
            return ServerSync(server.name, label, None, False, error=soa.unusable)
        served = soa.serial
        if served is None or dns.serial.Serial(served) < dns.serial.Serial(serial):
            return ServerSync(server.name, label, served, False, (f"serial {served} < {serial}",))
        answers = await asyncio.gather(*(querier.ask(server, e.name, e.rdtype)
                                         for e in expectations))
        why = next((a.unusable for a in answers if a.unusable), None)
        if why:
            return ServerSync(server.name, label, None, False, error=why)
        lagging = tuple(f"{e.name} {e.rdtype}" for e, a in zip(expectations, answers)
                        if (a.at_name.values if a.at_name else ()) != e.values)
        return ServerSync(server.name, label, served, not lagging, lagging)


def update_message(batch: UpdateBatch) -> dns.update.UpdateMessage:
    """The RFC 2136 message for a batch (unsigned): prerequisites, then operations in order."""
    message = dns.update.UpdateMessage(absolute_name(batch.zone))
    for pre in batch.prerequisites:
        name = absolute_name(pre.name)
        if pre.condition == "equals":
            message.present(name, dns.rdataset.from_text(dns.rdataclass.IN, pre.rdtype, 0,
                                                         *pre.values))
        elif pre.condition == "rrset-absent":
            message.absent(name, pre.rdtype)
        elif pre.condition == "name-absent":
            message.absent(name)
        else:
            raise ValueError(f"unknown prerequisite {pre.condition!r}")
    for op in batch.operations:
        if op.action == "delete":
            message.delete(absolute_name(op.name), op.rdtype)
        elif op.action == "replace":
            message.replace(absolute_name(op.name), op.ttl, op.rdtype, *op.values)
        else:
            raise ValueError(f"unknown operation {op.action!r}")
    return message
