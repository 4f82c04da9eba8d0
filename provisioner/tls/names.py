"""Whether a certificate is valid for a name: the one matcher of the provisioner (does
an installed certificate cover the agency?) and the verifier (tls.name).

RFC 6125 §6.4.3: a name matches a certificate name that spells it (case and a final dot
aside), or a wildcard ``*.parent`` where ``*`` stands for exactly the name's leftmost
label, never for several labels or none. The wildcard's parent must have at least two
labels: ``*.b`` matches nothing, as in OpenSSL's X509_check_host and the browsers (a
wildcard over a whole top-level domain is never honoured; RFC 6125 §7.2 leaves it to the
client). Only a whole label ``*`` is a wildcard (no ``f*.b.c``, which §6.4.3 allows a
client to refuse), and an IP address matches only itself.
"""

from __future__ import annotations

from typing import Iterable

from ..verify.model import ip_literal


def name_matches(name: str, cert_names: Iterable[str]) -> bool:
    """True when one of ``cert_names`` (DNS names, IP addresses) is valid for ``name``."""
    name = name.lower().rstrip(".")
    patterns = {pattern.lower().rstrip(".") for pattern in cert_names}
    if name in patterns:
        return True
    if ip_literal(name) is not None:
        return False
    label, _, parent = name.partition(".")
    return bool(label) and "." in parent and f"*.{parent}" in patterns
