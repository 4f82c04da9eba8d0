"""The doctor's DNS checks: the TSIG key, a signed zone transfer, every nameserver's
authority and serial, the NS set, the parent's delegation, CAA."""

from __future__ import annotations

from typing import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from ..dns.answer import normalize_name
from ..dns.client import DnsClient, Prerequisite, UpdateBatch
from ..errors import ProvisionerError
from ..registry.models import Inventory, Nameserver
from .checks import (
    PORT_TIMEOUT,
    Check,
    caa_check,
    caa_identity,
    error_check,
    ns_set_check,
    parent_check,
    serials_check,
)

PROBE_NAME = "_provisioner-doctor"  # a name whose TXT the TSIG probe says must exist


def check_dns(inventory: Inventory) -> list[Check]:
    settings = inventory.settings
    client = DnsClient(settings)
    zone = settings.zone
    checks = [tsig_check(client), axfr_check(client)]
    serials: dict[str, int | None] = {}
    for server in settings.nameservers:
        try:
            serials[server.name] = client.soa_serial(server)
            checks.append(Check("dns_authoritative", server.name, "pass",
                                f"answers with authority for {zone}, serial "
                                f"{serials[server.name]}"))
        except ProvisionerError as exc:
            serials[server.name] = None
            checks.append(error_check("dns_authoritative", server.name, exc))
    checks.append(serials_check(zone, serials))
    try:
        checks.append(ns_set_check(zone, [ns.name for ns in settings.nameservers],
                                   client.query(settings.primary, zone, "NS").names))
    except ProvisionerError as exc:
        checks.append(error_check("dns_ns_set", zone, exc))
    checks.append(check_parent(inventory))
    try:
        answer = client.query(settings.primary, zone, "CAA")
        checks.append(caa_check(zone, answer.at_name.values if answer.at_name else (),
                                caa_identity(settings.acme.directory,
                                             settings.acme.caa_identity),
                                settings.tls_mode == "dns-01-wildcard"))
    except (ProvisionerError, dns.exception.DNSException) as exc:
        checks.append(Check("dns_caa", zone, "fail", f"cannot read CAA: {exc}"))
    return checks


def tsig_check(client: DnsClient) -> Check:
    """A signed update that must not apply: its prerequisite (a TXT value at a probe name)
    is false, so the server verifies the key, then refuses the update (NXRRSET)."""
    zone = client.zone
    probe = UpdateBatch(zone, (Prerequisite("equals", f"{PROBE_NAME}.{zone}", "TXT",
                                            ('"never"',)),), ())
    target = f"{client.primary.name} ({client.primary.address})"
    try:
        rcode = client.update_rcode(probe)
    except ProvisionerError as exc:
        return error_check("dns_tsig", target, exc)
    if rcode in ("NXRRSET", "YXRRSET", "NXDOMAIN", "YXDOMAIN"):
        return Check("dns_tsig", target, "pass",
                     f"key {client.key.name!r} accepted (probe refused: {rcode}, nothing "
                     "changed)")
    if rcode == "REFUSED":
        return Check("dns_tsig", target, "fail",
                     f"key {client.key.name!r} may not update {zone} (REFUSED)",
                     "allow the key in the zone's allow-update (BIND) / "
                     "TSIG-ALLOW-DNSUPDATE (PowerDNS)")
    return Check("dns_tsig", target, "fail", f"the signed probe was answered {rcode}",
                 "check the primary's update configuration")


def axfr_check(client: DnsClient) -> Check:
    target = f"{client.primary.name} ({client.primary.address})"
    try:
        state = client.transfer()
    except ProvisionerError as exc:
        return error_check("dns_axfr", target, exc,
                           "allow the key in allow-transfer (BIND) / TSIG-ALLOW-AXFR "
                           "(PowerDNS)")
    return Check("dns_axfr", target, "pass",
                 f"signed zone transfer: {len(state.records)} names, serial {state.serial}")


def check_parent(inventory: Inventory) -> Check:
    """The parent zone's NS records for the zone, asked of the parent's own servers."""
    settings = inventory.settings
    zone = settings.zone
    parent = zone.split(".", 1)[1] if "." in zone else "."
    configured = [ns.name for ns in settings.nameservers]
    if settings.lab is not None:
        return Check("dns_parent_ns", zone, "skip",
                     f"the lab's zone is not delegated by {parent}: no parent to ask")
    return parent_check(zone, configured, delegated_names(zone, parent_servers(parent)),
                        parent)


def parent_servers(parent: str) -> list[Nameserver]:
    """The parent zone's nameservers, through this machine's resolver (none when it
    cannot say)."""
    try:
        return [Nameserver(str(ns.target), str(address))
                for ns in dns.resolver.resolve(parent, "NS")
                for address in dns.resolver.resolve(ns.target, "A")]
    except dns.exception.DNSException:
        return []


def delegated_names(zone: str, servers: Sequence[Nameserver],
                    timeout: float = PORT_TIMEOUT) -> list[str] | None:
    """The NS names the first parent server that answers gives for ``zone`` (a referral,
    or an answer); None when none answers with any."""
    query = dns.message.make_query(zone, "NS")
    query.flags &= ~dns.flags.RD
    for server in servers:
        try:
            response = dns.query.udp(query, server.address, port=server.port, timeout=timeout)
        except (dns.exception.DNSException, OSError):
            continue
        names = [normalize_name(rdata.target) for rrset in (*response.answer,
                                                            *response.authority)
                 if rrset.rdtype == dns.rdatatype.NS for rdata in rrset]
        if names:
            return names
    return None
