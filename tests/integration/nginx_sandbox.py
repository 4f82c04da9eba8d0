"""A throwaway nginx for the site tests: its own prefix, pid and temp paths in a tmp dir.

The site tests do not need the lab: they render vhosts for a sandbox copy of a web host
(paths under the tmp dir, address on PROVISIONER_TEST_NET), then run the real nginx
binary on them (``nginx -t``, or serving).
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner.registry.models import Host

NGINX = "/usr/sbin/nginx"
MAIN_CONF = """\
user root;
worker_processes 1;
worker_rlimit_nofile 1024;
pid {root}/nginx.pid;
error_log {root}/log/error.log;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {root}/log/access.log;
    client_body_temp_path {root}/temp/client_body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include {sites}/*.conf;
}}
"""


def sandbox_host(host: Host, root: Path, address: str) -> Host:
    """A copy of ``host`` whose folders live under ``root`` and whose address is ``address``."""
    folders = {name: root / name for name in
               ("sites", "www", "acme", "tls", "log", "temp")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        host, public_ipv4=address, nginx_main_config=root / "nginx.conf",
        nginx_sites_dir=folders["sites"], web_root=folders["www"],
        acme_webroot=folders["acme"], tls_dir=folders["tls"], log_dir=folders["log"])


def write_main_conf(host: Host) -> Path:
    root = host.nginx_main_config.parent
    host.nginx_main_config.write_text(MAIN_CONF.format(root=root, sites=host.nginx_sites_dir))
    return host.nginx_main_config


def nginx_command(host: Host, *args: str) -> list[str]:
    root = host.nginx_main_config.parent
    return [NGINX, "-p", str(root), "-e", str(root / "log" / "error.log"),
            "-c", str(host.nginx_main_config), *args]


def nginx_test(host: Host) -> subprocess.CompletedProcess:
    return subprocess.run(nginx_command(host, "-t"), capture_output=True, text=True, timeout=60)


def write_self_signed_cert(names: list[str], fullchain: Path, key_file: Path) -> None:
    """A throwaway ECDSA P-256 certificate for ``names`` (the first is the subject)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    fullchain.parent.mkdir(parents=True, exist_ok=True)
    fullchain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


class RunningNginx:
    """nginx in the foreground as a child process; ``stop()`` ends it (idempotent)."""

    def __init__(self, host: Host, port: int = 80):
        self.host, self.port = host, port
        self.process = subprocess.Popen(nginx_command(host, "-g", "daemon off;"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_until_listening(timeout=15)

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection((self.host.public_ipv4, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.host.public_ipv4}:{self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stderr.close()
