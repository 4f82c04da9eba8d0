"""Alerts: what changed since the last sweep, and the messages about it (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.verify import alerts
from provisioner.verify.alerts import Change, changes, next_state, render

SWEEP = "2026-01-05T01:00:00+00:00"
OK = {"active": True, "cert_due": False, "band": "A"}


def record(agency: str = "dinkes", *, active: bool = True, days: int | None = 60,
           band: str = "A", score: float = 100.0, reasons: tuple[str, ...] = ()) -> dict:
    return {"agency": agency, "name": f"Dinas {agency}", "url": f"https://{agency}.example.go.id/",
            "sweep": SWEEP, "active": active, "reasons": list(reasons),
            "cert": {"days_left": days}, "publication": {"band": band, "score": score}}


DOWN_REASON = "https.content: nginx default page"

# (case, state last seen or None for a new agency, this sweep's record, kinds alerted)
CASES = [
    ("healthy, unchanged", OK, record(), []),
    ("new healthy agency", None, record(), []),
    ("new agency already down", None, record(active=False, reasons=(DOWN_REASON,)), ["down"]),
    ("goes down", OK, record(active=False, band="E", score=0, reasons=(DOWN_REASON,)), ["down"]),
    ("stays down", {**OK, "active": False}, record(active=False, band="E", score=0), []),
    ("comes back", {**OK, "active": False}, record(), ["up"]),
    ("certificate enters the window", OK, record(days=29), ["cert"]),
    ("certificate stays in the window", {**OK, "cert_due": True}, record(days=12), []),
    ("certificate renewed", {**OK, "cert_due": True}, record(days=89), []),
    ("certificate unseen (site down)", {**OK, "cert_due": True},
     record(active=False, days=None, band="E"), ["down"]),
    ("band drops", OK, record(band="C", score=60), ["band"]),
    ("band rises", {**OK, "band": "C"}, record(band="A"), []),
    ("band drops while down: not alerted", {**OK, "band": "B"},
     record(active=False, band="E", score=0), ["down"]),
    ("back up with a lower band than before the outage", {**OK, "active": False, "band": "A"},
     record(band="D", score=40), ["up", "band"]),
    ("down and certificate expired at once", OK,
     record(active=False, days=-2, reasons=("tls.expiry: expired",)), ["down", "cert"]),
    ("unknown band letters are not compared", {**OK, "band": "Z"}, record(band="E"), []),
]


@pytest.mark.parametrize("previous,current,kinds", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_changes(previous: dict | None, current: dict, kinds: list[str]) -> None:
    state = {} if previous is None else {"dinkes": previous}
    found = changes(state, [current], cert_days=30)
    assert [c.kind for c in found] == kinds
    assert all(c.agency == "dinkes" and c.sweep == SWEEP for c in found)
    # The state after this sweep never alerts the same sweep again.
    assert changes(next_state(state, [current], 30), [current], 30) == []


def test_a_change_carries_what_the_message_needs() -> None:
    down, cert = changes({"dinkes": OK}, [record(active=False, days=-2, reasons=(DOWN_REASON,))])
    assert down.reasons == (DOWN_REASON,) and down.name == "Dinas dinkes"
    assert cert.days_left == -2
    [band] = changes({"dinkes": OK}, [record(band="D", score=35.5)])
    assert (band.band_from, band.band_to, band.score) == ("A", "D", 35.5)
    assert Change.from_dict(json.loads(json.dumps(band.to_dict()))) == band
    assert Change.from_dict({**down.to_dict(), "added_later": 1}) == down  # queued by a newer version


def test_next_state_forgets_agencies_gone_and_keeps_what_an_outage_hides() -> None:
    previous = {"gone": OK, "dinkes": {"active": True, "cert_due": True, "band": "B"}}
    state = next_state(previous, [record(active=False, days=None, band="E")], 30)
    assert state == {"dinkes": {"active": False, "cert_due": True, "band": "B"}}


def test_cert_days_is_the_window() -> None:
    assert [c.kind for c in changes({"dinkes": OK}, [record(days=20)], cert_days=14)] == []
    assert [c.kind for c in changes({"dinkes": OK}, [record(days=13)], cert_days=14)] == ["cert"]


# =========================================================================== rendering

def change(kind: str, **details) -> Change:
    return Change(kind, "dinkes", "Dinas Kesehatan", "https://dinkes.paserkab.go.id/", SWEEP,
                  **details)


LINES = [
    ("down", change("down", reasons=("tls.chain: unable to get local issuer",)),
     "TIDAK AKTIF: Dinas Kesehatan (https://dinkes.paserkab.go.id/): pemeriksaan "
     "\u201crantai sertifikat tepercaya\u201d gagal: unable to get local issuer",
     "DOWN: Dinas Kesehatan (https://dinkes.paserkab.go.id/): check \u201ccertificate chain "
     "trusted\u201d failed: unable to get local issuer"),
    ("down, reason of an unknown check", change("down", reasons=("no HTTPS: only http://",)),
     "TIDAK AKTIF: Dinas Kesehatan (https://dinkes.paserkab.go.id/): no HTTPS: only http://",
     "DOWN: Dinas Kesehatan (https://dinkes.paserkab.go.id/): no HTTPS: only http://"),
    ("down, no reason", change("down"),
     "TIDAK AKTIF: Dinas Kesehatan (https://dinkes.paserkab.go.id/): tanpa keterangan",
     "DOWN: Dinas Kesehatan (https://dinkes.paserkab.go.id/): no reason given"),
    ("up", change("up"), "AKTIF KEMBALI: Dinas Kesehatan (https://dinkes.paserkab.go.id/)",
     "BACK UP: Dinas Kesehatan (https://dinkes.paserkab.go.id/)"),
    ("cert", change("cert", days_left=12),
     "SERTIFIKAT perlu diperbarui: Dinas Kesehatan (https://dinkes.paserkab.go.id/), "
     "kedaluwarsa dalam 12 hari",
     "CERTIFICATE due for renewal: Dinas Kesehatan (https://dinkes.paserkab.go.id/), "
     "expires in 12 days"),
    ("cert expired", change("cert", days_left=-3),
     "SERTIFIKAT kedaluwarsa: Dinas Kesehatan (https://dinkes.paserkab.go.id/), sejak 3 hari lalu",
     "CERTIFICATE expired: Dinas Kesehatan (https://dinkes.paserkab.go.id/), 3 days ago"),
    ("band", change("band", band_from="A", band_to="C", score=61.5),
     "SKOR PUBLIKASI TURUN: Dinas Kesehatan (https://dinkes.paserkab.go.id/), kelompok A ke C "
     "(skor 61.5)",
     "PUBLICATION BAND DROPPED: Dinas Kesehatan (https://dinkes.paserkab.go.id/), from A to C "
     "(score 61.5)"),
]


@pytest.mark.parametrize("found,indonesian,english", [c[1:] for c in LINES],
                         ids=[c[0] for c in LINES])
def test_one_line_per_change_in_both_languages(found: Change, indonesian: str,
                                               english: str) -> None:
    assert render([found], "id", "paserkab.go.id", 35, 36).lines == (indonesian,)
    assert render([found], "en", "paserkab.go.id", 35, 36).lines == (english,)


def test_the_message_sums_up_every_change() -> None:
    message = render([change("down"), change("up")], "id", "paserkab.go.id", 35, 36)
    assert message.subject == "[provisioner] paserkab.go.id: 2 perubahan status situs"
    assert message.text.splitlines() == [
        "Perubahan sejak pemeriksaan sebelumnya (paserkab.go.id):", "",
        "- TIDAK AKTIF: Dinas Kesehatan (https://dinkes.paserkab.go.id/): tanpa keterangan",
        "- AKTIF KEMBALI: Dinas Kesehatan (https://dinkes.paserkab.go.id/)", "",
        "Saat ini aktif 35 dari 36 situs."]


def test_many_changes_are_listed_up_to_a_bound_and_counted() -> None:
    many = [change("up")] * (alerts.MAX_LISTED + 5)
    lines = render(many, "en", "z.go.id", 1, 1).lines
    assert len(lines) == alerts.MAX_LISTED + 1
    assert lines[-1] == "... and 5 more change(s) (see 'provisioner sweep')"


HOSTILE_NAME = "Dinas <b>X</b> \x1b[2J\x1b]0;owned\x07 \u202etxt.exe\r\nBcc: evil@example.org"


def test_sites_words_are_cleaned_and_bounded() -> None:
    hostile = Change("down", "x", HOSTILE_NAME, "https://x.go.id/" + "a" * 1000, SWEEP,
                     reasons=("https.content: " + "\x00\x1b[31m" + "z" * 5000,))
    [line] = render([hostile], "en", "z.go.id", 0, 1).lines
    assert not any(ch in line for ch in "\x00\x1b\x07\r\n\u202e")
    assert "Dinas <b>X</b>" in line  # plain text keeps it; HTML escapes it (below)
    assert len(line) < 3 * alerts.MAX_FIELD + 100


def test_html_mail_escapes_everything_from_sites() -> None:
    hostile = Change("down", "x", HOSTILE_NAME, "https://x.go.id/", SWEEP,
                     reasons=("https.content: <script>alert(1)</script>",))
    html = alerts.render_html(render([hostile], "en", "z.go.id<i>", 0, 1))
    assert "<script>" not in html and "<b>X</b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;X&lt;/b&gt;" in html


def test_webhook_payload_is_json_with_the_changes() -> None:
    hostile = Change("down", "x", HOSTILE_NAME, "https://x.go.id/", SWEEP,
                     reasons=('"}, "injected": true, {"',))
    body = json.loads(alerts.webhook_payload(render([hostile], "id", "z.go.id", 0, 1), "z.go.id"))
    assert set(body) == {"schema", "zone", "subject", "text", "changes"}
    assert body["changes"][0]["reasons"] == ['"}, "injected": true, {"']
    assert body["changes"][0]["name"] == HOSTILE_NAME  # data is data: intact, encoded by JSON


def test_telegram_text_stays_under_the_limit_and_ends_at_a_line() -> None:
    many = [Change("up", f"a{i}", "N" * 200, "https://a.go.id/", SWEEP) for i in range(40)]
    text = alerts.telegram_text(render(many, "id", "z.go.id", 40, 40))
    assert len(text) <= alerts.TELEGRAM_MAX + 2 and text.endswith("\n\u2026")
    short = alerts.telegram_text(render(many[:1], "id", "z.go.id", 40, 40))
    assert short.startswith("[provisioner] z.go.id: 1 perubahan") and "\u2026" not in short


def test_report_mail_text() -> None:
    subject, text = alerts.render_report_mail("paserkab.go.id", "05-01-2026", 35, 36, 97.2, "id")
    assert subject == "Laporan keaktifan situs perangkat daerah paserkab.go.id, 05-01-2026"
    assert "Situs aktif: 35 dari 36 (97,2 %)." in text
    _, english = alerts.render_report_mail("z.go.id", "05-01-2026", 1, 2, 50.0, "en")
    assert "Active sites: 1 of 2 (50 %)." in english


def test_errors_never_carry_a_secret_or_the_url() -> None:
    token = "123456:AAH-secret-token-value"
    url = f"https://api.example.org/bot{token}/sendMessage"
    error = alerts._describe(ValueError(f"bad request to {url}"), hide=(url, token))
    assert token not in error and "/bot" not in error and error.startswith("ValueError: ")


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_sample_is_what_render_writes() -> None:
    found = [Change("down", "dinkes", "Dinas Kesehatan Kabupaten Paser",
                    "https://dinkes.paserkab.go.id/", SWEEP,
                    reasons=("tls.chain: certificate has expired",)),
             Change("up", "disdukcapil", "Dinas Kependudukan dan Pencatatan Sipil",
                    "https://disdukcapil.paserkab.go.id/", SWEEP),
             Change("cert", "bappeda", "Badan Perencanaan Pembangunan Daerah",
                    "https://bappeda.paserkab.go.id/", SWEEP, days_left=19),
             Change("band", "dkisp", "Dinas Komunikasi, Informatika, Statistik dan Persandian",
                    "https://dkisp.paserkab.go.id/", SWEEP, band_from="A", band_to="C",
                    score=62)]
    message = render(found, "id", "paserkab.go.id", 35, 36)
    assert f"```\n{message.subject}\n{message.text}```\n" in README.read_text()


def test_a_broken_history_skips_the_alerts_but_not_the_sweep(sample, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from provisioner.cli.options import Lang
    from provisioner.cli.verify import _send_alerts
    from provisioner.registry.load import load_inventory
    from provisioner.verify.sweep import summarise

    settings = sample.read("group_vars/all.yml")
    settings["alerts"] = {"webhook": {"url": "http://127.0.0.1:9/never-reached"}}
    sample.write("group_vars/all.yml", settings)
    (sample.state_dir / "history.sqlite").mkdir(parents=True)  # not a database
    records = (record(active=False),)
    sweep = SimpleNamespace(records=records, summary=summarise(records))
    [line] = _send_alerts(load_inventory(sample.root, sample.state_dir), sweep, Lang.id)
    assert line.startswith("alerts: not sent, tried again at the next sweep: history ")


def test_certificates_are_alerted_at_the_sweeps_warning_threshold() -> None:
    from provisioner.registry.models import ALERT_CERT_DAYS, RENEW_DAYS
    from provisioner.verify.sweep import EXPIRY_WARN_DAYS

    assert ALERT_CERT_DAYS == EXPIRY_WARN_DAYS < RENEW_DAYS
    assert [c.kind for c in changes({"dinkes": OK}, [record(days=25)])] == []
    assert [c.kind for c in changes({"dinkes": OK}, [record(days=20)])] == ["cert"]


def test_the_bands_are_the_scoring_rules_bands() -> None:
    from provisioner.verify.content import load_rules

    assert alerts.BANDS == tuple(band.grade for band in load_rules().bands)
