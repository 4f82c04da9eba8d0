"""What to do about certificates (pure): which ones the hosted agencies need in the
inventory's TLS mode (``cert_targets``), whether each must be ordered, renewed or kept
(``decide``), how the controller's records change that (``for_this_ca``), and what the
orders ask of the CA's rate limits (``demands``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from ..registry.models import RENEW_DAYS, AcmeSettings, Agency, Inventory
from ..site import render as site
from . import ratelimit
from .certs import CertInfo, CertRecord, CertTarget, Install, wildcard_key
from .names import name_matches

# =========================================================================== renewal


@dataclass(frozen=True)
class CertDecision:
    action: str  # "order" (none yet), "renew", "keep"
    reason: str
    renewal: bool = False  # "renew" of a certificate that has every name already (the CA's
    # rate limits may exempt it)


def renewal_due(not_after: dt.datetime, now: dt.datetime, days: int = RENEW_DAYS) -> bool:
    """Renew when the certificate expires within ``days`` days (or already has)."""
    return not_after - now <= dt.timedelta(days=days)


def decide(cert: CertInfo | None, names: Sequence[str], now: dt.datetime,
           days: int = RENEW_DAYS) -> CertDecision:
    """Whether a certificate for ``names`` must be ordered, renewed or kept."""
    if cert is None:
        return CertDecision("order", "no certificate installed")
    missing = [n for n in names if not name_matches(n, cert.names)]
    if missing:
        return CertDecision("renew", f"does not cover {', '.join(missing)}")
    if cert.not_after <= now:
        return CertDecision("renew", f"expired on {cert.not_after:%Y-%m-%d}", renewal=True)
    if renewal_due(cert.not_after, now, days):
        return CertDecision("renew", f"expires in {cert.days_left(now):.0f} days "
                                     f"(renewing within {days})", renewal=True)
    return CertDecision("keep", f"valid until {cert.not_after:%Y-%m-%d} "
                                f"({cert.days_left(now):.0f} days left)")


# =========================================================================== what to order


def cert_targets(inventory: Inventory, agencies: Sequence[Agency]) -> list[CertTarget]:
    """The certificates the hosted ``agencies`` need in the inventory's TLS mode."""
    hosted = [a for a in agencies if a.hosted]
    settings = inventory.settings
    if settings.tls_mode == "dns-01-wildcard":
        if not hosted:
            return []
        installs = {}
        for agency in hosted:
            host = inventory.hosts[agency.host]
            paths = site.cert_paths(agency, host, settings)
            installs[host.name] = Install(host.name, paths.fullchain, paths.key)
        return [CertTarget(key=wildcard_key(settings.zone),
                           names=(f"*.{settings.zone}", settings.zone), challenge="dns-01",
                           installs=tuple(installs[h] for h in sorted(installs)),
                           agencies=tuple(a.slug for a in hosted))]
    targets = []
    for agency in hosted:
        host = inventory.hosts[agency.host]
        paths = site.cert_paths(agency, host, settings)
        targets.append(CertTarget(key=agency.slug, names=(agency.fqdn,), challenge="http-01",
                                  installs=(Install(host.name, paths.fullchain, paths.key),),
                                  agencies=(agency.slug,)))
    return targets


# =========================================================================== records, limits


def for_this_ca(decisions: Mapping[str, CertDecision], records: Mapping[str, CertRecord],
                directory: str) -> dict[str, CertDecision]:
    """Decisions seen with the controller's records: a certificate another CA directory
    issued (staging, before going to production) is ordered again from this one, and a
    renew is a renewal (exempt from some of the CA's limits) only when this CA issued it."""
    seen = {}
    for key, decision in decisions.items():
        record = records.get(key)
        if record is not None and record.directory != directory and decision.action == "keep":
            decision = CertDecision("renew", f"issued by another CA ({record.directory})")
        elif decision.renewal and (record is None or record.directory != directory):
            decision = replace(decision, renewal=False)
        seen[key] = decision
    return seen


def demands(targets: Sequence[CertTarget], decisions: Mapping[str, CertDecision],
            acme: AcmeSettings) -> list[ratelimit.Demand]:
    """What ordering each target that is not kept asks of the CA's limits."""
    return [ratelimit.Demand(t.key, t.names, acme.directory, decisions[t.key].renewal)
            for t in targets if decisions[t.key].action != "keep"]
