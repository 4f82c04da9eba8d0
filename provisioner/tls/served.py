"""Which certificate a host serves: after install and reload, each agency's site is
asked for its certificate (a TLS handshake with the agency name as SNI, to the host's
address) and its serial compared with the one just issued.
"""

from __future__ import annotations

import functools
import socket
import ssl
from typing import Sequence

from cryptography import x509

from ..errors import HostError
from ..registry.models import Inventory
from .issuer import CertResult
from .parallel import parallel


@functools.lru_cache(maxsize=1)
def _compare_only_context() -> ssl.SSLContext:
    """No trust check: the served serial is compared with the one just issued."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_serial(address: str, port: int, sni: str, timeout: float = 5.0) -> int:
    """Serial of the certificate a server presents for ``sni``."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                _compare_only_context().wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise HostError(f"{address}:{port}", f"TLS handshake for {sni} failed: {exc}") from None
    return x509.load_der_x509_certificate(der).serial_number


def served_problems(inventory: Inventory, results: Sequence[CertResult]) -> dict[str, str]:
    """For every issued result: does each of its agencies' sites serve the new serial?

    Asked once, right after the reload: a reload returns only when no worker of the
    old config takes connections, so an old serial here is a real problem."""
    checks = [(slug, result.info.serial) for result in results
              if result.status == "changed" and result.info is not None and result.target
              for slug in result.target.agencies]

    def check(item: tuple[str, int]) -> str | None:
        slug, expected = item
        agency = inventory.agencies[slug]
        host = inventory.hosts[agency.host]
        try:
            serial = served_serial(host.public_ipv4, 443, agency.fqdn)
        except HostError as exc:
            return str(exc)
        return None if serial == expected else (
            f"{agency.fqdn} on {host.name} serves serial {serial:x}, not the new {expected:x}")

    found = parallel(check, checks)
    return {slug: problem for (slug, _serial), problem in zip(checks, found) if problem}
