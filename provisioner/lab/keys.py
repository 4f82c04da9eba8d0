"""The keys and certificates the lab makes (TSIG, SSH, Pebble's API CA, the trust file's
roots) and the atomic file write everything the lab writes goes through."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..dns.tsig import TsigKey, load_tsig_key
from ..errors import LabError
from ..hosts import hostlib
from .render import tsig_key_text

MAX_KEPT_ROOTS = 20  # Pebble roots of earlier starts kept in the trust file


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Write atomically with ``mode`` (set before any byte lands); False when unchanged."""
    raw = data.encode() if isinstance(data, str) else data
    path = Path(path)
    try:
        if path.read_bytes() == raw and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    hostlib.write_atomic(str(path), raw, mode)  # creates the folder when missing
    return True


def ensure_tsig_key(path: Path, default_name: str) -> TsigKey:
    """Read the TSIG key file, or create it (hmac-sha256, 256-bit secret, mode 0600)."""
    if Path(path).exists():
        return load_tsig_key(path)
    key = TsigKey(default_name, "hmac-sha256", base64.b64encode(secrets.token_bytes(32)).decode())
    write_file(path, tsig_key_text(key), 0o600)
    return key


def ensure_backup_password(path: Path) -> None:
    """Create the lab's backup repository password file (random, mode 0600) once."""
    if not Path(path).exists():
        write_file(path, secrets.token_urlsafe(32) + "\n", 0o600)


def ensure_ssh_key(path: Path, comment: str) -> str:
    """Return the public key line of an ed25519 key, creating the key pair if missing."""
    path = Path(path)
    if path.exists():
        try:
            private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise LabError("ssh", f"cannot read private key {path}: {exc}") from None
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        write_file(path, private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), 0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}\n"
    write_file(path.with_name(path.name + ".pub"), line, 0o644)
    return line.strip()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_api_ca() -> tuple[bytes, bytes]:
    """A small CA for Pebble's own API certificate: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("provisioner lab API CA"))
        .issuer_name(_name("provisioner lab API CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_api_cert(ca_cert_pem: bytes, ca_key_pem: bytes, address: str) -> tuple[bytes, bytes]:
    """Pebble's API server certificate for ``address`` (IP SAN), signed by the lab CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pebble"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def api_cert_fits(cert_path: Path, ca_path: Path, address: str) -> bool:
    """True when the existing API certificate names ``address``, is signed by the CA
    file we would hand out, and stays valid for another 30 days."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName) \
            .value.get_values_for_type(x509.IPAddress)
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any unreadable or foreign file means "regenerate"
        return False
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    return ipaddress.ip_address(address) in ips and cert.not_valid_after_utc > soon


def split_pem(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", text, re.S)


def merge_roots(current: str, existing: str, keep: int = MAX_KEPT_ROOTS) -> str:
    """The current Pebble root first, then roots of earlier starts (deduplicated).

    Pebble makes a new root at every start; keeping earlier ones lets certificates
    issued before a lab restart still verify.
    """
    roots: list[str] = []
    for pem in split_pem(current) + split_pem(existing):
        pem = pem.strip() + "\n"
        if pem not in roots:
            roots.append(pem)
    return "".join(roots[:keep])

