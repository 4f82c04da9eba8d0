"""Alerts against real servers on loopback: an SMTP server (aiosmtpd, STARTTLS or TLS
from the first byte, AUTH) with a certificate made here, and one HTTP server that is
both the webhook receiver and a Telegram-shaped Bot API (POST /bot<TOKEN>/sendMessage).

The channel tests need no lab. The end-to-end test sweeps two agency sites on the lab
(set up like test_sweep's), breaks one, repairs it, and stops the SMTP server for a sweep.
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import socket
import sqlite3
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from provisioner.registry.models import EmailSettings, TelegramSettings, WebhookSettings
from provisioner.verify import alerts
from provisioner.verify.alerts import (
    Change,
    DeliveryError,
    EmailChannel,
    TelegramChannel,
    WebhookChannel,
)

from ..certkit import cert_pem, key_pem, new_ca, new_leaf
from .conftest import TestLab, make_test_inventory, run_cli
from .test_verify import NGINX_DEFAULT_PAGE, Sites, SiteSpec, served_sites

LOOPBACK = "127.0.0.1"
ZONE = "paserkab.go.id"


# =========================================================================== servers

@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    ca, ca_key = new_ca("alerts test CA", days=7)
    leaf, key = new_leaf(ca, ca_key, [LOOPBACK])
    files = TlsFiles(folder / "ca.pem", folder / "smtp.pem", folder / "smtp.key")
    files.ca.write_bytes(cert_pem(ca))
    files.cert.write_bytes(cert_pem(leaf))
    files.key.write_bytes(key_pem(key))
    files.key.chmod(0o600)
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Mailbox:
    """What the SMTP server accepted, and the logins it saw."""

    user: str
    password: str
    mails: list[email.message.EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        self.mails.append(email.message_from_bytes(envelope.original_content,
                                                   policy=email.policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append(auth_data.login.decode())
        ok = auth_data.login.decode() == self.user and auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 235 or 535


@dataclass
class SmtpServer:
    tls: TlsFiles
    mailbox: Mailbox
    port: int
    implicit_tls: bool = False
    controller: Controller | None = None

    def start(self) -> None:
        context = self.tls.server_context()
        # With TLS from the first byte aiosmtpd does not know the session is encrypted:
        # its AUTH-only-over-TLS rule applies to STARTTLS sessions.
        options = ({"ssl_context": context, "auth_require_tls": False} if self.implicit_tls else
                   {"tls_context": context, "require_starttls": True, "auth_require_tls": True})
        self.controller = Controller(self.mailbox, hostname=LOOPBACK, port=self.port,
                                     authenticator=self.mailbox.authenticate,
                                     auth_required=True, **options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None


@contextmanager
def smtp_server(tls: TlsFiles, *, implicit_tls: bool = False) -> Iterator[SmtpServer]:
    server = SmtpServer(tls, Mailbox("alerts@paserkab.go.id", secrets.token_urlsafe(16)),
                        free_port(), implicit_tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: every POST recorded (path, JSON body); it answers
    ``status``."""

    url: str
    posts: list[tuple[str, dict]] = field(default_factory=list)
    status: int = 200

    def bodies(self, path_prefix: str) -> list[dict]:
        return [body for path, body in self.posts if path.startswith(path_prefix)]


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    receiver = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            length = int(self.headers.get("content-length", "0"))
            receiver.posts.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(receiver.status)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    receiver.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def email_settings(server: SmtpServer, password_file: Path, *, security: str = "starttls",
                   ca: Path | None = None) -> EmailSettings:
    return EmailSettings(host=LOOPBACK, port=server.port, security=security,
                         username=server.mailbox.user, password_file=password_file,
                         sender="provisioner@paserkab.go.id", to=("ops@paserkab.go.id",),
                         report_to=("kadis@paserkab.go.id",), ca_bundle=ca or server.tls.ca)


# =========================================================================== channels

HOSTILE = "Dinas <b>Kesehatan</b> \x1b[31m\u202eevil & \"quoted\"\n"
DOWN = Change("down", "dinkes", HOSTILE, "https://dinkes.paserkab.go.id/", "2026-01-05T01:00:00+00:00",
              reasons=("tls.chain: certificate <script>alert(1)</script>",))


def message() -> alerts.Message:
    return alerts.render([DOWN], "id", ZONE, active=35, total=36)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # TLS from byte one
@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls"])
def test_email_goes_through_tls_with_the_password_from_its_file(
        tls: TlsFiles, tmp_path: Path, implicit_tls: bool) -> None:
    with smtp_server(tls, implicit_tls=implicit_tls) as server:
        password = secret_file(tmp_path / "smtp-password", server.mailbox.password)
        settings = email_settings(server, password,
                                  security="tls" if implicit_tls else "starttls")
        EmailChannel(settings).send(message())
    [mail] = server.mailbox.mails
    assert server.mailbox.recipients == [["ops@paserkab.go.id"]]
    assert mail["Subject"] == f"[provisioner] {ZONE}: 1 perubahan status situs"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "TIDAK AKTIF: Dinas <b>Kesehatan</b>" in text and "\x1b" not in text
    assert "\u202e" not in text and "\n- " in text
    assert "&lt;b&gt;Kesehatan&lt;/b&gt;" in html and "<script>" not in html
    assert "&lt;script&gt;" in html


def test_email_refuses_an_untrusted_server_and_a_wrong_password(tls: TlsFiles,
                                                                 tmp_path: Path) -> None:
    other_ca = make_tls_files(tmp_path).ca
    with smtp_server(tls) as server:
        password = secret_file(tmp_path / "smtp-password", server.mailbox.password)
        with pytest.raises(DeliveryError) as untrusted:
            EmailChannel(email_settings(server, password, ca=other_ca)).send(message())
        wrong = secret_file(tmp_path / "wrong-password", "not-the-password-" + secrets.token_hex(8))
        with pytest.raises(DeliveryError) as refused:
            EmailChannel(email_settings(server, wrong)).send(message())
    assert "certificate verify failed" in str(untrusted.value)
    assert str(untrusted.value).startswith(f"email {LOOPBACK}:{server.port}: ")
    assert "535" in str(refused.value) or "Authentication" in str(refused.value)
    assert wrong.read_text().strip() not in str(refused.value)
    assert server.mailbox.mails == []
    assert set(server.mailbox.logins) == {server.mailbox.user}  # only the wrong password got in as far


def test_email_to_a_server_that_is_down_is_a_delivery_error(tls: TlsFiles,
                                                           tmp_path: Path) -> None:
    with smtp_server(tls) as server:
        password = secret_file(tmp_path / "smtp-password", server.mailbox.password)
    with pytest.raises(DeliveryError, match="Connection refused|ConnectionRefused"):
        EmailChannel(email_settings(server, password)).send(message())


def test_webhook_posts_the_changes_as_json() -> None:
    with http_receiver() as receiver:
        WebhookChannel(WebhookSettings(f"{receiver.url}/hook/s3cr3t-path"), ZONE).send(message())
    [(path, body)] = receiver.posts
    assert path == "/hook/s3cr3t-path"
    assert body["schema"] == "provisioner/alert/v1" and body["zone"] == ZONE
    assert body["changes"] == [DOWN.to_dict()]  # the site's own words, intact, as JSON data
    assert "TIDAK AKTIF" in body["text"] and "\x1b" not in body["text"]


def test_telegram_sends_plain_text_and_never_shows_its_token(tmp_path: Path) -> None:
    token = f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(26)}"
    token_file = secret_file(tmp_path / "bot-token", token)
    with http_receiver() as receiver:
        channel = TelegramChannel(TelegramSettings(receiver.url, token_file, "-1001234567890"))
        channel.send(message())
        receiver.status = 401
        with pytest.raises(DeliveryError) as unauthorised:
            channel.send(message())
    with pytest.raises(DeliveryError) as unreachable:
        channel.send(message())  # the receiver is gone: connection refused
    [body, _] = receiver.bodies(f"/bot{token}/sendMessage")
    assert body["chat_id"] == "-1001234567890" and "parse_mode" not in body
    assert body["text"].startswith(f"[provisioner] {ZONE}: 1 perubahan")
    for error in (unauthorised.value, unreachable.value):
        assert token not in str(error) and "/bot" not in str(error) and "sendMessage" not in str(error)
    assert str(unauthorised.value) == f"telegram {LOOPBACK}: HTTP 401"


def test_alerts_test_tries_every_channel_and_names_the_one_that_fails(
        tls: TlsFiles, tmp_path: Path) -> None:
    inventory = make_test_inventory(tmp_path / "inventory", agencies=False)
    state = tmp_path / "state"
    token = f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(26)}"
    with smtp_server(tls) as smtp, http_receiver() as receiver:
        add_alerts(inventory, smtp, receiver, tmp_path, token)
        receiver.status = 403
        result = run_cli(inventory, state, "alerts", "test", "--lang", "en")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "email: delivered", f"webhook: FAILED: webhook {LOOPBACK}: HTTP 403",
        f"telegram: FAILED: telegram {LOOPBACK}: HTTP 403"]
    [mail] = smtp.mailbox.mails
    assert mail["Subject"] == f"[provisioner] {ZONE}: alert channel test"
    assert len(receiver.posts) == 2 and token not in result.stdout + result.stderr
    assert not (state / "history.sqlite").exists()  # a test changes no state


# =========================================================================== end to end on the lab

@dataclass
class AlertLab:
    sites: Sites
    smtp: SmtpServer
    receiver: Receiver
    token: str
    broken_index: Path  # the flaky site's index.html

    def sweep(self, *args: str):
        return self.sites.cli("sweep", "--ca", str(self.sites.ca_file), "--timeout", "1",
                              "--concurrency", "4", *args)

    def messages(self) -> dict[str, list[str]]:
        """Every message each channel received so far, as text."""
        return {"email": [m.get_body(("plain",)).get_content() for m in self.smtp.mailbox.mails],
                "webhook": [b["text"] for b in self.receiver.bodies("/hook")],
                "telegram": [b["text"] for b in self.receiver.bodies(f"/bot{self.token}/")]}


def add_alerts(inventory_dir: Path, smtp: SmtpServer, receiver: Receiver, secrets_dir: Path,
               token: str) -> None:
    path = inventory_dir / "group_vars" / "all.yml"
    data = yaml.safe_load(path.read_text())
    data["alerts"] = {
        "email": {"host": LOOPBACK, "port": smtp.port, "security": "starttls",
                  "username": smtp.mailbox.user,
                  "password_file": str(secret_file(secrets_dir / "smtp-password",
                                                   smtp.mailbox.password)),
                  "from": "provisioner@paserkab.go.id", "to": ["ops@paserkab.go.id"],
                  "report_to": ["kadis@paserkab.go.id"], "ca_bundle": str(smtp.tls.ca)},
        "webhook": {"url": f"{receiver.url}/hook"},
        "telegram": {"api_base": receiver.url,
                     "bot_token_file": str(secret_file(secrets_dir / "bot-token", token)),
                     "chat_id": "-1001234567890"},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def alert_lab(lab: TestLab, tls: TlsFiles, tmp_path: Path) -> Iterator[AlertLab]:
    specs = [SiteSpec("al-stable"), SiteSpec("al-flaky", served_by="web2")]
    token = f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(26)}"
    with smtp_server(tls) as smtp, http_receiver() as receiver, \
            served_sites(lab, tmp_path / "sites", specs) as sites:
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir(mode=0o700)
        add_alerts(sites.inventory_dir, smtp, receiver, secrets_dir, token)
        host = lab.inventory.hosts["web2"]
        yield AlertLab(sites, smtp, receiver, token,
                       host.web_root / "verify-al-flaky" / "index.html")


@pytest.mark.integration
def test_a_broken_site_is_alerted_once_and_its_repair_once(alert_lab: AlertLab) -> None:
    al = alert_lab
    first = al.sweep()
    assert first.exit_code == 0, first.stdout + first.stderr
    assert "alerts: no change since the last sweep" in first.stdout
    assert al.messages() == {"email": [], "webhook": [], "telegram": []}

    starter_page = al.broken_index.read_bytes()
    al.broken_index.write_bytes(NGINX_DEFAULT_PAGE.read_bytes())
    broken = al.sweep()
    assert broken.exit_code == 1  # an agency is not active
    for channel in ("email", "webhook", "telegram"):
        assert f"alerts: {channel}: sent 1 change(s)" in broken.stdout, broken.stdout
    sent = al.messages()
    assert {name: len(texts) for name, texts in sent.items()} == \
        {"email": 1, "webhook": 1, "telegram": 1}
    for text in (sent["email"][0], sent["webhook"][0], sent["telegram"][0]):
        assert "TIDAK AKTIF:" in text and "al-flaky" in text and "al-stable" not in text
        assert "pemeriksaan \u201ckonten nyata\u201d gagal: " in text  # the reason, in Indonesian
        assert "Saat ini aktif 1 dari 2 situs." in text

    again = al.sweep()
    assert again.exit_code == 1 and "alerts: no change since the last sweep" in again.stdout
    assert al.messages() == sent  # an unchanged state is never alerted twice

    al.smtp.stop()  # the mail server goes down while the site is repaired
    al.broken_index.write_bytes(starter_page)
    repaired = al.sweep("--lang", "en")
    assert repaired.exit_code == 0, repaired.stdout  # the sweep itself succeeds
    assert "alerts: email: NOT sent, 1 change(s) kept for the next sweep: email " \
           f"{LOOPBACK}:{al.smtp.port}: " in repaired.stdout
    assert "alerts: webhook: sent 1 change(s)" in repaired.stdout
    after = al.messages()
    assert len(after["email"]) == 1
    for channel in ("webhook", "telegram"):
        assert len(after[channel]) == 2 and "BACK UP: " in after[channel][1]
        assert "https://al-flaky." in after[channel][1]
    status = al.sites.cli("alerts", "status", "--format", "json")
    waiting = json.loads(status.stdout)["waiting"]
    assert [(w["channel"], w["waiting"], w["attempts"]) for w in waiting] == [("email", 1, 1)]

    al.smtp.start()  # back on the same port
    later = al.sweep("--lang", "en")
    assert later.exit_code == 0 and "alerts: email: sent 1 change(s)" in later.stdout
    final = al.messages()
    assert len(final["email"]) == 2 and "BACK UP: " in final["email"][1]
    assert "https://al-flaky." in final["email"][1]
    assert final["webhook"] == after["webhook"] and final["telegram"] == after["telegram"]

    outputs = "".join(r.stdout + r.stderr for r in (first, broken, again, repaired, later))
    history = (al.sites.lab.state_dir / "history.sqlite").read_bytes()
    for secret in (al.token, al.smtp.mailbox.password):
        assert secret not in outputs and secret.encode() not in history


@pytest.mark.integration
def test_report_mails_leadership_the_html_report_with_the_trend(alert_lab: AlertLab,
                                                                tmp_path: Path) -> None:
    al = alert_lab
    for _ in range(2):
        assert al.sweep("--no-alerts").exit_code == 0
    assert al.messages()["webhook"] == []  # --no-alerts sends nothing
    written = al.sites.cli("report", "-o", str(tmp_path / "laporan.html"))
    assert written.exit_code == 0, written.stderr
    mailed = al.sites.cli("report", "--mail")
    assert mailed.exit_code == 0, mailed.stderr
    assert "to kadis@paserkab.go.id" in mailed.stderr
    [mail] = al.smtp.mailbox.mails
    assert al.smtp.mailbox.recipients == [["kadis@paserkab.go.id"]]
    assert mail["Subject"].startswith("Laporan keaktifan situs perangkat daerah")
    html = mail.get_body(("html",)).get_content()
    report = (tmp_path / "laporan.html").read_text()
    assert html.splitlines() == report.splitlines()  # mail lines end in CRLF
    assert "<svg" in html  # two sweeps or more: the trend chart
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename().startswith("laporan-")
    assert attachment.get_payload(decode=True).decode() == report
    with sqlite3.connect(al.sites.lab.state_dir / "history.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM alert_queue").fetchone() == (0,)
