"""The alerts: block of group_vars/all.yml: validated like every other setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.registry.load import load_inventory
from provisioner.registry.models import (
    AlertSettings,
    EmailSettings,
    TelegramSettings,
    WebhookSettings,
)

from .conftest import SAMPLE, SampleInventory

PASSWORD = "hunter2-is-not-a-password-0123"


def with_alerts(sample: SampleInventory, alerts: object) -> None:
    settings = sample.read("group_vars/all.yml")
    settings["alerts"] = alerts
    sample.write("group_vars/all.yml", settings)


def secret(path: Path, mode: int = 0o600, value: str = PASSWORD) -> str:
    path.write_text(value + "\n")
    path.chmod(mode)
    return str(path)


def email(tmp: Path, **overrides: object) -> dict:
    return {"host": "smtp.paserkab.go.id", "username": "provisioner@paserkab.go.id",
            "password_file": secret(tmp / "smtp-password"), "from": "provisioner@paserkab.go.id",
            "to": ["ops@paserkab.go.id"], **overrides}


def test_every_channel_with_its_defaults(sample: SampleInventory, tmp_path: Path) -> None:
    with_alerts(sample, {"email": email(tmp_path, report_to="kadis@paserkab.go.id"),
                         "webhook": {"url": "https://hooks.example.go.id/x?key=abc"},
                         "telegram": {"bot_token_file": secret(tmp_path / "bot-token"),
                                      "chat_id": -1001234567890}})
    alerts = load_inventory(sample.root, sample.state_dir).settings.alerts
    assert alerts == AlertSettings(
        email=EmailSettings(host="smtp.paserkab.go.id", port=587, security="starttls",
                            username="provisioner@paserkab.go.id",
                            password_file=tmp_path / "smtp-password",
                            sender="provisioner@paserkab.go.id", to=("ops@paserkab.go.id",),
                            report_to=("kadis@paserkab.go.id",), ca_bundle=None),
        webhook=WebhookSettings("https://hooks.example.go.id/x?key=abc"),
        telegram=TelegramSettings("https://api.telegram.org", tmp_path / "bot-token",
                                  "-1001234567890"),
        cert_days=21)
    assert load_inventory(SAMPLE).settings.alerts is None  # the sample sends none


def test_implicit_tls_defaults_to_port_465(sample: SampleInventory, tmp_path: Path) -> None:
    with_alerts(sample, {"email": email(tmp_path, security="tls")})
    assert load_inventory(sample.root, sample.state_dir).settings.alerts.email.port == 465


# (case, alerts block given the tmp dir, the field named, words of the message)
BAD = [
    ("not a mapping", lambda t: ["email"], "alerts", "must be a mapping of channels"),
    ("no channel", lambda t: {"cert_days": 10}, "alerts", "no channel configured"),
    ("unknown channel", lambda t: {"slack": {}, "webhook": {"url": "https://h.go.id/"}},
     "alerts.slack", "unknown key"),
    ("cert days", lambda t: {"cert_days": 0, "webhook": {"url": "https://h.go.id/"}},
     "alerts.cert_days", "from 1 to 365"),
    ("security", lambda t: {"email": email(t, security="ssl")}, "alerts.email.security",
     "unknown security 'ssl'"),
    ("host", lambda t: {"email": email(t, host="smtp;rm -rf")}, "alerts.email.host",
     "not a host name or IP address"),
    ("port", lambda t: {"email": email(t, port=70000)}, "alerts.email.port", "port number"),
    ("recipients", lambda t: {"email": email(t, to=[])}, "alerts.email.to",
     "list of e-mail addresses"),
    ("recipient", lambda t: {"email": email(t, to=["ops"])}, "alerts.email.to",
     "list of e-mail addresses"),
    ("sender", lambda t: {"email": email(t, **{"from": "me"})}, "alerts.email.from",
     "not an e-mail address"),
    ("password file missing", lambda t: {"email": email(t, password_file=str(t / "none"))},
     "alerts.email.password_file", "file not found"),
    ("password file readable", lambda t: {"email": email(
        t, password_file=secret(t / "open-password", 0o644))},
     "alerts.email.password_file", "readable by group or others (mode 0644)"),
    ("username without password file", lambda t: {"email": {
        k: v for k, v in email(t).items() if k != "password_file"}},
     "alerts.email.password_file", "missing"),
    ("email key typo", lambda t: {"email": email(t, reportto=["a@b.go.id"])},
     "alerts.email.reportto", "did you mean 'report_to'"),
    ("webhook url", lambda t: {"webhook": {"url": "ftp://h.go.id/"}}, "alerts.webhook.url",
     "http(s) URL"),
    ("telegram chat", lambda t: {"telegram": {"bot_token_file": secret(t / "tok"),
                                              "chat_id": "chat one"}},
     "alerts.telegram.chat_id", "not a Telegram chat id"),
    ("telegram token file readable", lambda t: {"telegram": {
        "bot_token_file": secret(t / "tok", 0o640), "chat_id": 12345}},
     "alerts.telegram.bot_token_file", "readable by group or others (mode 0640)"),
    ("telegram api base", lambda t: {"telegram": {
        "bot_token_file": secret(t / "tok"), "chat_id": 1, "api_base": "api.telegram.org"}},
     "alerts.telegram.api_base", "http(s) URL"),
]


@pytest.mark.parametrize("block,field,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_setting_is_one_line_naming_file_and_field(sample: SampleInventory,
                                                         tmp_path: Path, block, field: str,
                                                         words: str) -> None:
    with_alerts(sample, block(tmp_path))
    sample.assert_one_settings_error(field, words, PASSWORD)


def test_report_mail_needs_leadership_addresses(sample: SampleInventory, tmp_path: Path) -> None:
    with_alerts(sample, {"email": email(tmp_path)})
    result = sample.cli("report", "--mail")
    assert result.exit_code == 2
    assert re.match(r"error: \S*group_vars/all\.yml: alerts\.email\.report_to: ",
                    result.stderr), result.stderr


def test_report_before_any_sweep(sample: SampleInventory) -> None:
    result = sample.cli("report")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: no sweep recorded yet (hint: run 'provisioner "
                                     "sweep' first)")


def test_alert_commands_need_alerts_configured(sample: SampleInventory) -> None:
    for command in (["alerts", "test"], ["alerts", "status"]):
        result = sample.cli(*command)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: no alerts configured (hint: add an alerts: "
                                        "block to ")


def test_the_commented_example_in_the_sample_is_valid(sample: SampleInventory) -> None:
    path = sample.root / "group_vars" / "all.yml"
    lines = path.read_text().splitlines()
    start = lines.index("# alerts:")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    path.write_text("\n".join(lines + block) + "\n")
    (sample.state_dir / "secrets").mkdir(parents=True)
    for name in ("smtp-password", "telegram-bot-token"):
        secret(sample.state_dir / "secrets" / name)
    alerts = load_inventory(sample.root, sample.state_dir).settings.alerts
    assert alerts.email.report_to == ("kadis@paserkab.go.id",)
    assert alerts.webhook and alerts.telegram.chat_id == "-1001234567890"
