"""Alerts on change after each sweep: e-mail (SMTP), a JSON webhook, Telegram.

Three parts, kept apart:

* what changed (pure): ``changes`` compares a sweep's records with the state last seen
  per agency (active, certificate inside the renewal window, publication band) and
  ``next_state`` is what to remember; an agency never seen before counts as healthy,
  so a site already down when alerts are switched on is alerted once;
* the message (pure): ``render`` in Bahasa Indonesia or English, plain text, with the
  sites' own words (reasons, names) cleaned of control characters and bounded;
  ``render_html`` escapes them for mail;
* the channels: one small client each, which only sends and turns every library error
  into a ``DeliveryError`` that names no secret (the Telegram URL holds the bot token
  and a webhook URL may hold one: neither is ever put in a message).

``alert_after_sweep`` ties them to history.sqlite: the new state and the changes (queued
per channel) are written in one transaction, then each channel is sent everything it
has queued. A channel that fails keeps its queue for the next sweep; nothing raised by a
channel stops the others or the sweep.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from dataclasses import asdict, dataclass, field, fields
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from typing import Any, Iterable, Protocol
from urllib.parse import urlsplit

from ..errors import ExternalError, ProvisionerError
from ..registry.models import (
    ALERT_CERT_DAYS,
    AlertSettings,
    EmailSettings,
    Inventory,
    TelegramSettings,
    WebhookSettings,
)
from ..safety.secrets import LOADED_SECRETS, read_secret_file
from . import history
from .model import CHECKS

SCHEMA = "provisioner/alert/v1"
BANDS = ("A", "B", "C", "D", "E")  # best first, as in scoring.yml
HEALTHY = {"active": True, "cert_due": False, "band": None}  # an agency not seen before
TIMEOUT = 15.0  # seconds per network step of a channel
MAX_LISTED = 40  # changes listed in one message; the rest are counted
MAX_FIELD = 240  # characters kept of one name, URL or reason
TELEGRAM_MAX = 4000  # Telegram refuses texts over 4096 characters

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")


# =========================================================================== what changed

@dataclass(frozen=True)
class Change:
    """One thing ops should hear about: an agency went down, came back, has a certificate
    due for renewal, or publishes less than before."""

    kind: str  # down, up, cert or band
    agency: str
    name: str
    url: str
    sweep: str  # when the sweep that saw it started (ISO 8601)
    reasons: tuple[str, ...] = ()  # down: "check.id: detail", as in the sweep record
    days_left: int | None = None  # cert
    band_from: str | None = None  # band
    band_to: str | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        known = {f.name for f in fields(cls)} - {"reasons"}
        return cls(**{key: value for key, value in data.items() if key in known},
                   reasons=tuple(data.get("reasons", ())))


def _key(record: dict[str, Any]) -> str:
    return record["agency"] or record["url"]


def observed(record: dict[str, Any], previous: dict[str, Any] | None,
             cert_days: int = ALERT_CERT_DAYS) -> dict[str, Any]:
    """What to remember of one agency after this sweep. A certificate not seen (site
    unreachable) and the band of a site that is down keep their previous value: an
    outage is one change, not three."""
    before = previous or HEALTHY
    days = record["cert"]["days_left"]
    active = bool(record["active"])
    return {"active": active,
            "cert_due": before["cert_due"] if days is None else days < cert_days,
            "band": record["publication"]["band"] if active else before["band"]}


def next_state(previous_state: dict[str, dict], records: Iterable[dict[str, Any]],
               cert_days: int = ALERT_CERT_DAYS) -> dict[str, dict]:
    """The state to remember: every agency of this sweep (agencies gone are forgotten)."""
    return {_key(r): observed(r, previous_state.get(_key(r)), cert_days) for r in records}


def changes(previous_state: dict[str, dict], records: Iterable[dict[str, Any]],
            cert_days: int = ALERT_CERT_DAYS) -> list[Change]:
    """What changed since the state last seen, in the records' order (pure)."""
    found: list[Change] = []
    for record in records:
        before = previous_state.get(_key(record)) or HEALTHY
        after = observed(record, before, cert_days)
        found += _differences(record, before, after)
    return found


def _differences(record: dict[str, Any], before: dict, after: dict) -> list[Change]:
    def change(kind: str, **details: Any) -> Change:
        return Change(kind, _key(record), record.get("name") or _key(record), record["url"],
                      record["sweep"], **details)

    found = []
    if before["active"] and not after["active"]:
        found.append(change("down", reasons=tuple(record["reasons"])))
    elif after["active"] and not before["active"]:
        found.append(change("up"))
    if after["cert_due"] and not before["cert_due"]:
        found.append(change("cert", days_left=record["cert"]["days_left"]))
    if _band_dropped(before["band"], after["band"]):
        found.append(change("band", band_from=before["band"], band_to=after["band"],
                            score=record["publication"]["score"]))
    return found


def _band_dropped(before: str | None, after: str | None) -> bool:
    return before in BANDS and after in BANDS and BANDS.index(after) > BANDS.index(before)


# =========================================================================== the message

TEXT = {
    "id": {
        "subject": "[provisioner] {zone}: {count} perubahan status situs",
        "test_subject": "[provisioner] {zone}: uji kanal peringatan",
        "test_line": "Ini pesan uji dari provisioner; kanal ini berfungsi.",
        "heading": "Perubahan sejak pemeriksaan sebelumnya ({zone}):",
        "down": "TIDAK AKTIF: {name} ({url}): {reasons}",
        "up": "AKTIF KEMBALI: {name} ({url})",
        "cert": "SERTIFIKAT perlu diperbarui: {name} ({url}), kedaluwarsa dalam {days} hari",
        "cert_expired": "SERTIFIKAT kedaluwarsa: {name} ({url}), sejak {days} hari lalu",
        "band": "SKOR PUBLIKASI TURUN: {name} ({url}), kelompok {band_from} ke {band_to} "
                "(skor {score})",
        "more": "... dan {count} perubahan lain (lihat 'provisioner sweep')",
        "now": "Saat ini aktif {active} dari {total} situs.",
        "no_reason": "tanpa keterangan",
        "reason": "pemeriksaan \u201c{check}\u201d gagal: {detail}",
        "report_subject": "Laporan keaktifan situs perangkat daerah {zone}, {date}",
        "report_text": "Terlampir laporan keaktifan situs perangkat daerah {zone} dari "
                       "pemeriksaan {date}, dengan tren sepekan terakhir.\n\n"
                       "Situs aktif: {active} dari {total} ({pct} %).\n",
    },
    "en": {
        "subject": "[provisioner] {zone}: {count} site status change(s)",
        "test_subject": "[provisioner] {zone}: alert channel test",
        "test_line": "This is a test message from provisioner; this channel works.",
        "heading": "Changes since the previous sweep ({zone}):",
        "down": "DOWN: {name} ({url}): {reasons}",
        "up": "BACK UP: {name} ({url})",
        "cert": "CERTIFICATE due for renewal: {name} ({url}), expires in {days} days",
        "cert_expired": "CERTIFICATE expired: {name} ({url}), {days} days ago",
        "band": "PUBLICATION BAND DROPPED: {name} ({url}), from {band_from} to {band_to} "
                "(score {score})",
        "more": "... and {count} more change(s) (see 'provisioner sweep')",
        "now": "Active now: {active} of {total} sites.",
        "no_reason": "no reason given",
        "reason": "check \u201c{check}\u201d failed: {detail}",
        "report_subject": "Agency website report for {zone}, {date}",
        "report_text": "Attached is the agency website report for {zone} from the sweep of "
                       "{date}, with the past week's trend.\n\n"
                       "Active sites: {active} of {total} ({pct} %).\n",
    },
}


@dataclass(frozen=True)
class Message:
    subject: str
    heading: str
    lines: tuple[str, ...]  # one per change, cleaned
    footer: str
    changes: tuple[Change, ...] = field(default=(), compare=False)

    @property
    def text(self) -> str:
        return "\n".join([self.heading, "", *(f"- {line}" for line in self.lines), "",
                          self.footer]).strip() + "\n"


def clean(text: Any, limit: int = MAX_FIELD) -> str:
    """A site's words made safe for a terminal, a chat or a mail line: control and
    direction-changing characters become spaces, the length is bounded."""
    flat = " ".join(_UNPRINTABLE.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "\u2026"


def _reason(reason: str, lang: str) -> str:
    check_id, _, detail = reason.partition(": ")
    check = CHECKS.get(check_id)
    if check and detail:
        return TEXT[lang]["reason"].format(check=check.title(lang), detail=clean(detail))
    return clean(reason)


def _line(change: Change, lang: str) -> str:
    t = TEXT[lang]
    fields = {"name": clean(change.name), "url": clean(change.url)}
    if change.kind == "down":
        reasons = "; ".join(_reason(r, lang) for r in change.reasons[:3]) or t["no_reason"]
        return t["down"].format(reasons=reasons, **fields)
    if change.kind == "cert":
        days = change.days_left if change.days_left is not None else "?"
        if isinstance(days, int) and days < 0:
            return t["cert_expired"].format(days=-days, **fields)
        return t["cert"].format(days=days, **fields)
    if change.kind == "band":
        score = f"{change.score:g}" if change.score is not None else "?"
        return t["band"].format(band_from=clean(change.band_from, 2),
                                band_to=clean(change.band_to, 2), score=score, **fields)
    return t["up"].format(**fields)


def render(found: list[Change] | tuple[Change, ...], lang: str, zone: str, active: int,
           total: int) -> Message:
    """One message summing up every change (pure). Over MAX_LISTED, the rest are counted."""
    t = TEXT[lang]
    lines = [_line(change, lang) for change in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        lines.append(t["more"].format(count=len(found) - MAX_LISTED))
    return Message(subject=t["subject"].format(zone=zone, count=len(found)),
                   heading=t["heading"].format(zone=zone), lines=tuple(lines),
                   footer=t["now"].format(active=active, total=total), changes=tuple(found))


def render_test(lang: str, zone: str) -> Message:
    t = TEXT[lang]
    return Message(subject=t["test_subject"].format(zone=zone), heading=t["test_line"],
                   lines=(), footer="")


def render_report_mail(zone: str, date: str, active: int, total: int, pct: float,
                       lang: str) -> tuple[str, str]:
    """Subject and text part of the leadership report mail (pure)."""
    t = TEXT[lang]
    figures = {"zone": zone, "date": date, "active": active, "total": total,
               "pct": f"{pct:g}".replace(".", ",") if lang == "id" else f"{pct:g}"}
    return t["report_subject"].format(**figures), t["report_text"].format(**figures)


def render_html(message: Message) -> str:
    """The message for an HTML mail part: every text escaped."""
    items = "".join(f"<li>{escape(line)}</li>" for line in message.lines)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
            f"{escape(message.subject)}</title></head><body>\n<p>{escape(message.heading)}</p>\n"
            + (f"<ul>{items}</ul>\n" if items else "")
            + (f"<p>{escape(message.footer)}</p>\n" if message.footer else "")
            + "</body></html>\n")


def webhook_payload(message: Message, zone: str) -> str:
    return json.dumps({"schema": SCHEMA, "zone": zone, "subject": message.subject,
                       "text": message.text, "changes": [c.to_dict() for c in message.changes]},
                      ensure_ascii=False)


def telegram_text(message: Message) -> str:
    """Plain text (no parse_mode: nothing in it is markup), cut at a line under the limit."""
    text = f"{message.subject}\n\n{message.text}"
    if len(text) <= TELEGRAM_MAX:
        return text
    return text[:TELEGRAM_MAX].rsplit("\n", 1)[0] + "\n\u2026"


# =========================================================================== channels

class DeliveryError(ExternalError):
    """A channel could not deliver (system: the channel's name); the message names no
    secret."""


def _describe(exc: BaseException, hide: tuple[str, ...] = ()) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in hide:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return clean(LOADED_SECRETS.scrub(text), 300)


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


class _ConfiguredChannel:
    """A channel built from its settings block; ``timeout`` bounds each network call."""

    name: str

    def __init__(self, settings: Any, timeout: float = TIMEOUT):
        self.settings = settings
        self.timeout = timeout


class EmailChannel(_ConfiguredChannel):
    name = "email"
    settings: EmailSettings

    def send(self, message: Message) -> None:
        mail = self._mail(message.subject, self.settings.to, message.text)
        mail.add_alternative(render_html(message), subtype="html")
        self.send_mail(mail)

    def send_report(self, subject: str, text: str, html: str, filename: str) -> None:
        """The leadership report: a short text, the HTML report as the alternative body
        and as an attachment to archive."""
        mail = self._mail(subject, self.settings.report_to, text)
        mail.add_alternative(html, subtype="html")
        mail.add_attachment(html.encode("utf-8"), maintype="text", subtype="html",
                            filename=filename)
        self.send_mail(mail)

    def _mail(self, subject: str, to: tuple[str, ...], text: str) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = clean(subject, 200)
        mail["From"] = self.settings.sender
        mail["To"] = ", ".join(to)
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain=self.settings.sender.rsplit("@", 1)[1])
        mail.set_content(text)
        return mail

    def send_mail(self, mail: EmailMessage) -> None:
        s = self.settings
        password = (read_secret_file(s.password_file, "alerts.email.password_file")
                    .decode("utf-8", "replace").strip() if s.password_file else None)
        context = ssl.create_default_context(cafile=str(s.ca_bundle) if s.ca_bundle else None)
        try:
            if s.security == "tls":
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=self.timeout)
            try:
                if s.security == "starttls":
                    client.starttls(context=context)  # refused by the server: no plain text
                if s.username:
                    client.login(s.username, password or "")
                client.send_message(mail)
            finally:
                client.close()  # no QUIT: after a failure it would wait for a dead peer
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            raise DeliveryError("email", f"{s.host}:{s.port}",
                                _describe(exc, hide=(password or "",))) from None


def _post_json(channel: str, url: str, body: str, hide: tuple[str, ...],
               timeout: float) -> None:
    """POST a JSON body through the verifier's HTTP client; any answer but 2xx is a
    failure. The URL is never in a message (its path may carry a token): only its host is."""
    from .http import request_once  # aiohttp only when an alert is sent
    from .tls import ProbeFailure

    parts = urlsplit(url)
    try:
        status = request_once("POST", url, timeout=timeout, data=body.encode("utf-8"),
                              headers={"content-type": "application/json"}).status
    except ProbeFailure as exc:
        raise DeliveryError(channel, parts.hostname or "?",
                            _describe(exc, hide=(url, parts.path, *hide))) from None
    if not 200 <= status < 300:
        raise DeliveryError(channel, parts.hostname or "?", f"HTTP {status}")


class WebhookChannel(_ConfiguredChannel):
    name = "webhook"
    settings: WebhookSettings

    def __init__(self, settings: WebhookSettings, zone: str, timeout: float = TIMEOUT):
        super().__init__(settings, timeout)
        self.zone = zone

    def send(self, message: Message) -> None:
        _post_json(self.name, self.settings.url, webhook_payload(message, self.zone), (),
                   self.timeout)


class TelegramChannel(_ConfiguredChannel):
    name = "telegram"
    settings: TelegramSettings

    def send(self, message: Message) -> None:
        token = read_secret_file(self.settings.bot_token_file, "alerts.telegram.bot_token_file")
        token_text = token.decode("utf-8", "replace").strip()
        body = json.dumps({"chat_id": self.settings.chat_id, "text": telegram_text(message),
                           "disable_web_page_preview": True}, ensure_ascii=False)
        _post_json(self.name, f"{self.settings.api_base}/bot{token_text}/sendMessage", body,
                   (token_text,), self.timeout)


def channels_of(settings: AlertSettings, zone: str) -> list[Channel]:
    """The configured channels, in a fixed order."""
    built: list[Channel] = []
    if settings.email:
        built.append(EmailChannel(settings.email))
    if settings.webhook:
        built.append(WebhookChannel(settings.webhook, zone))
    if settings.telegram:
        built.append(TelegramChannel(settings.telegram))
    return built


# =========================================================================== after a sweep

@dataclass(frozen=True)
class ChannelOutcome:
    channel: str
    changes: int  # how many were in the message
    error: str | None = None  # None: delivered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlertRun:
    found: tuple[Change, ...]  # new in this sweep
    outcomes: tuple[ChannelOutcome, ...]  # one per channel that had something to send

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.found],
                "channels": [o.to_dict() for o in self.outcomes]}


def alert_after_sweep(inventory: Inventory, records: tuple[dict, ...], active: int, total: int,
                      lang: str = "id") -> AlertRun:
    """Queue what changed for every channel, then send each channel its queue."""
    settings = inventory.settings.alerts
    if settings is None:
        return AlertRun((), ())
    channels = channels_of(settings, inventory.settings.zone)

    def compute(previous: dict[str, dict]) -> tuple[dict[str, dict], list[dict]]:
        found = changes(previous, records, settings.cert_days)
        return next_state(previous, records, settings.cert_days), [c.to_dict() for c in found]

    found = history.update_alert_state(inventory.state_dir, compute,
                                       [channel.name for channel in channels])
    outcomes = [_send_queue(inventory, channel, lang, active, total) for channel in channels]
    return AlertRun(tuple(Change.from_dict(c) for c in found),
                    tuple(o for o in outcomes if o is not None))


def _send_queue(inventory: Inventory, channel: Channel, lang: str, active: int,
                total: int) -> ChannelOutcome | None:
    queued = history.claim_alerts(inventory.state_dir, channel.name)
    if not queued:
        return None
    message = render([Change.from_dict(data) for _, data in queued], lang,
                     inventory.settings.zone, active, total)
    ids = [row_id for row_id, _ in queued]
    error = _try_send(channel, message)
    if error:
        history.alerts_failed(inventory.state_dir, ids, error)
    else:
        history.alerts_delivered(inventory.state_dir, ids)
    return ChannelOutcome(channel.name, len(ids), error)


def _try_send(channel: Channel, message: Message) -> str | None:
    """Send; the error as one clean line (None when delivered). Whatever a channel
    raises, even a bug of ours, is its failure alone: the sweep and the other channels
    go on."""
    try:
        channel.send(message)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        text = str(exc) if isinstance(exc, ProvisionerError) else _describe(exc)
        return clean(LOADED_SECRETS.scrub(text), 400)
    return None


def send_test(inventory: Inventory, lang: str = "id") -> list[ChannelOutcome]:
    """A test message through every configured channel; no state is touched."""
    settings = inventory.settings.alerts
    if settings is None:
        return []
    message = render_test(lang, inventory.settings.zone)
    return [ChannelOutcome(channel.name, 0, _try_send(channel, message))
            for channel in channels_of(settings, inventory.settings.zone)]

