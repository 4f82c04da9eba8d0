"""The certificates as 'provisioner certs' lists them: from the controller's records
(no host contacted), or read live from every host's disk."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ProvisionerError
from ..hosts.agent import HostClient
from ..registry.models import RENEW_DAYS, Agency, Inventory
from .certs import CertInfo, CertTarget, Install, cert_info, read_records
from .decisions import CertDecision, cert_targets, decide
from .parallel import parallel


@dataclass(frozen=True)
class CertListing:
    """One certificate as 'provisioner certs' shows it (from a record or read on a host)."""

    key: str
    names: tuple[str, ...]
    host: str
    source: str  # "record" (controller) or "host" (read live)
    decision: CertDecision
    serial: str | None = None
    not_after: dt.datetime | None = None
    error: str | None = None

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"key": self.key, "names": list(self.names), "host": self.host,
                "source": self.source, "serial": self.serial,
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": round((self.not_after - now).total_seconds() / 86400, 1)
                if self.not_after else None,
                "status": listing_status(self), "reason": self.error or self.decision.reason}


def listing_status(listing: CertListing) -> str:
    if listing.error:
        return "error"
    return {"keep": "ok", "renew": "renew due", "order": "missing"}[listing.decision.action]


def recorded_certs(state_dir: Path, now: dt.datetime, days: int = RENEW_DAYS
                   ) -> list[CertListing]:
    """What the controller issued, from its records (fast: no host is contacted)."""
    listings = []
    for record in read_records(state_dir):
        info = CertInfo(int(record.serial, 16), dt.datetime.fromisoformat(record.not_before),
                        record.not_after_time, record.names, record.issuer)
        listings.append(CertListing(record.key, record.names, ", ".join(record.hosts), "record",
                                    decide(info, record.names, now, days), record.serial,
                                    record.not_after_time))
    return listings


def live_certs(inventory: Inventory, agencies: Sequence[Agency], now: dt.datetime,
               days: int = RENEW_DAYS) -> list[CertListing]:
    """What every host really has on disk for the agencies' certificates (one round trip
    per host, hosts in parallel); an unreachable host is listed with its error."""
    targets = cert_targets(inventory, agencies)
    hosts = sorted({i.host for t in targets for i in t.installs})

    def read(name: str) -> dict[Path, str | None]:
        paths = [i.fullchain for t in targets for i in t.installs if i.host == name]
        with HostClient(inventory.hosts[name], inventory.settings.known_hosts_file) as client:
            return client.certificates(paths)

    found = dict(zip(hosts, parallel(read, hosts)))
    listings = []
    for target in targets:
        for place in target.installs:
            pems = found[place.host]
            if isinstance(pems, ProvisionerError):
                listings.append(CertListing(target.key, target.names, place.host, "host",
                                            CertDecision("order", "unknown"), error=str(pems)))
                continue
            listings.append(_host_listing(target, place, pems.get(place.fullchain), now, days))
    return listings


def _host_listing(target: CertTarget, place: Install, pem: str | None, now: dt.datetime,
                  days: int) -> CertListing:
    try:
        info = cert_info(pem.encode()) if pem else None
    except ProvisionerError as exc:
        return CertListing(target.key, target.names, place.host, "host",
                           CertDecision("renew", "unreadable"), error=f"{place.fullchain}: {exc}")
    if info is None:
        return CertListing(target.key, target.names, place.host, "host",
                           decide(None, target.names, now, days))
    return CertListing(target.key, info.names, place.host, "host",
                       decide(info, target.names, now, days), info.serial_hex, info.not_after)
