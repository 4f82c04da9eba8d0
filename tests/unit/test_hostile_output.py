"""What a site sends can neither abort a run nor reach a terminal or report unescaped:
the guard's verdicts and reasons, the inward-address rule, the external-agency minimum,
and the escaping of every output (terminal, JSON, JUnit, HTML, Prometheus)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioner.cli.output import visible
from provisioner.verify.content import load_rules
from provisioner.verify.guard import (
    crash_reason,
    is_external_agency,
    port_of,
    running_step,
    stopped_result,
)
from provisioner.verify.health import Stop, inward_kind
from provisioner.verify.model import NO_CERT, AgencyResult, Status, result, skipped
from provisioner.verify.report import html as report_html
from provisioner.verify.report import json_text, jsonl, junit, prom
from provisioner.verify.sweep import SweepResult, reasons, record_of, summarise
from provisioner.verify.verifier import Target

from .conftest import SampleInventory

HOSTILE = "Dinas \x1b]0;pwned\x07\x1b[31mMerah\x9b2J [bold]x[/] [/x] \u202egnp.exe\x00\ud800"


class _Ctx:
    """What stopped_result reads of a VerifyContext."""

    rules = load_rules()


# =========================================================================== the guard

def test_a_crash_is_one_bounded_printable_line() -> None:
    reason = crash_reason(ValueError("Invalid IPv6 URL\n" + "x" * 5000 + "\x1b[2J"))
    assert reason.startswith("verification failed: ValueError: Invalid IPv6 URL x")
    assert len(reason) < 300 and reason.isprintable() and reason.endswith("...")
    assert crash_reason(RecursionError()) == "verification failed: RecursionError"


def test_a_stopped_site_keeps_what_it_found_and_gives_the_rest_its_reason() -> None:
    target = Target("dinkes", "dinkes.example.go.id", "https://dinkes.example.go.id/",
                    "http://dinkes.example.go.id/")
    found = [result("dns.resolves", Status.PASS, "127.0.0.20"),
             result("http.redirect", Status.ERROR, "GET /: no answer within 5s")]
    stopped = stopped_result(target, _Ctx(), Stop(Status.ERROR, "verification failed: KeyError"),
                             found)
    assert not stopped.active and stopped.has_errors
    assert stopped.checks[0] == found[0] and stopped.status("http.redirect") is Status.ERROR
    assert {c.detail for c in stopped.problems() if c.id != "http.redirect"} == {
        "verification failed: KeyError"}
    assert {c.status for c in stopped.checks if c.id.startswith("publication.")} == {Status.SKIP}
    assert "https.status: verification failed: KeyError" in reasons(stopped)
    refused = stopped_result(target, _Ctx(), Stop(Status.FAIL, "refused: loopback"))
    assert refused.status("https.status") is Status.FAIL and not refused.has_errors
    assert refused.status("dns.resolves") is Status.FAIL


def test_the_running_step_is_named_from_the_coroutine_chain() -> None:
    async def read_publication() -> None:
        await asyncio.sleep(10)

    async def _probe_site() -> None:
        await read_publication()

    async def main() -> tuple[str, str]:
        task = asyncio.get_running_loop().create_task(_probe_site())
        await asyncio.sleep(0)
        named = running_step(task)
        task.cancel()

        async def helper_of_a_new_step() -> None:
            await asyncio.sleep(10)

        other = asyncio.get_running_loop().create_task(helper_of_a_new_step())
        await asyncio.sleep(0)
        unknown = running_step(other)
        other.cancel()
        return named, unknown

    assert asyncio.run(main()) == ("reading the publication pages", "in helper_of_a_new_step")


def test_only_external_agencies_are_kept_off_inward_addresses() -> None:
    external = Target("dinkes", "dinkes.go.id", "https://dinkes.go.id/", None)
    hosted = Target("dinkes", "dinkes.go.id", "https://dinkes.go.id/", None,
                    expected=object())  # type: ignore[arg-type]
    typed_url = Target(None, "10.0.0.1", "https://10.0.0.1:8443/", None)
    assert is_external_agency(external)
    assert not is_external_agency(hosted) and not is_external_agency(typed_url)
    assert port_of(typed_url) == 8443 and port_of(external) == 443
    assert port_of(Target(None, "x.go.id", None, "http://x.go.id/")) == 80


@pytest.mark.parametrize("address,kind", [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
    ("172.16.0.1", "private"), ("fd00::1", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("203.0.113.0", "private"),
    ("8.8.8.8", None), ("2001:4860:4860::8888", None), ("36.89.1.1", None),
])
def test_inward_addresses(address: str, kind: str | None) -> None:
    assert inward_kind(address) == kind


# =========================================================================== reasons

def _site(url: str, *checks) -> AgencyResult:
    rules = load_rules()
    return AgencyResult("s", url, tuple(checks), rules.nothing_published, NO_CERT)


def test_an_http_only_site_is_inactive_with_a_reason() -> None:
    no_https = "an http:// URL on a non-standard port: no HTTPS to check"
    site = _site("http://s.example.go.id:8080/", result("dns.resolves", Status.PASS, "ok"),
                 *skipped(["tls.chain", "tls.name", "https.status", "https.content"], no_https))
    assert not site.active
    assert reasons(site) == ["no HTTPS: served only over http:// (http://s.example.go.id:8080/)"]


def test_every_inactive_record_has_a_reason() -> None:
    rules = load_rules()
    started = dt.datetime.now(dt.timezone.utc)
    odd = _site("https://s.example.go.id/", *skipped(["https.status"], "not probed"))
    record = record_of(odd, "S", started, rules, 1)
    assert not record["active"] and record["reasons"] == ["https.status: skip: not probed"]
    good = _site("https://s.example.go.id/", result("https.status", Status.PASS, "200"))
    assert record_of(good, "S", started, rules, 1)["reasons"] == []


# =========================================================================== outputs

def _sweep_of(detail: str, agency: str = "dinkes") -> SweepResult:
    rules = load_rules()
    started = dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.timezone.utc)
    site = AgencyResult(agency, "https://dinkes.example.go.id/", (
        result("tls.name", Status.FAIL, detail), result("https.status", Status.ERROR, detail),
        result("https.hsts", Status.WARN, detail)), rules.nothing_published, NO_CERT)
    records = (record_of(site, HOSTILE, started, rules, 1),)
    return SweepResult(started, started + dt.timedelta(seconds=3), rules.version, records,
                       summarise(records))


def test_terminal_text_escapes_every_control_and_override() -> None:
    shown = visible(HOSTILE)
    assert shown.isprintable()
    assert "\x1b" not in shown and "\x9b" not in shown and "\u202e" not in shown
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202e" in shown and "\\x00" in shown
    assert "[bold]x[/] [/x]" in shown  # escaping is not markup: shown as written
    assert visible("Dinas Kesehatan — Paser") == "Dinas Kesehatan — Paser"


def test_json_and_jsonl_escape_what_a_terminal_obeys() -> None:
    text = json_text({"detail": HOSTILE.replace("\ud800", "")})
    assert text.isascii() or all(ch.isprintable() for ch in text)
    assert json.loads(text)["detail"] == HOSTILE.replace("\ud800", "")
    lines = jsonl.render(_sweep_of(HOSTILE.replace("\ud800", ""))).splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0] and "\x9b" not in lines[0]
    assert json.loads(lines[0])["checks"][0]["detail"] == HOSTILE.replace("\ud800", "")


def test_junit_is_well_formed_xml_whatever_a_detail_holds() -> None:
    document = junit.render(_sweep_of(HOSTILE, agency="dinkes"))
    root = ET.fromstring(document)  # raises on a character XML 1.0 forbids
    failure = root.find("testsuite/testcase/failure")
    assert "\\x1b]0;pwned\\x07" in failure.get("message")
    assert "[bold]x[/]" in failure.get("message")
    assert "warning:" in root.find("testsuite/testcase/system-out").text


def test_html_report_escapes_names_and_reasons() -> None:
    page = report_html.render(_sweep_of("<script>alert(1)</script>\x1b[31m"), [], load_rules(),
                              "example.go.id")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x00" not in page and "\ufffd" in page


def test_html_report_lists_the_reason_of_an_inactive_site_without_failed_checks() -> None:
    rules = load_rules()
    started = dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.timezone.utc)
    site = _site("http://s.example.go.id:8080/", *skipped(["https.status"], "no HTTPS"))
    records = (record_of(site, "S", started, rules, 1),)
    sweep = SweepResult(started, started, rules.version, records, summarise(records))
    page = report_html.render(sweep, [], rules, "example.go.id", "en")
    assert "no HTTPS: served only over http://" in page


def test_prometheus_label_values_are_escaped() -> None:
    text = prom.render(_sweep_of("x", agency='a"b\\c\nd'))
    assert 'provisioner_agency_active{agency="a\\"b\\\\c\\nd"} 0' in text
    assert all(line.count("\n") == 0 for line in text.splitlines())


# =========================================================================== registry

def test_rich_markup_in_a_name_is_shown_as_written(sample: SampleInventory) -> None:
    data = sample.read("agencies/dinkes.yml")
    data["short_name"] = "Dinkes [/x]"
    data["name"] = "Dinas [bold red]Kesehatan[/]"
    sample.write("agencies/dinkes.yml", data)
    listed = sample.cli("registry", "list")
    assert listed.exception is None and listed.exit_code == 0, listed.stdout
    assert "Dinkes [/x]" in listed.stdout


def _external_only(sample: SampleInventory, **extra: object) -> Path:
    return sample.write("agencies/dkisp.yml", {"slug": "dkisp", "name": "Dinas Kominfo",
                                               "external": "https://dkisp.example.go.id/",
                                               **extra})


def test_an_external_agency_needs_only_slug_name_and_url(sample: SampleInventory) -> None:
    _external_only(sample)
    listed = sample.cli("registry", "list", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["slug"] == "dkisp")
    assert row["external"] == "https://dkisp.example.go.id/"
    assert row["short_name"] == "Dinas Kominfo" and row["services"] == 0


def test_what_an_external_agency_gives_is_still_checked(sample: SampleInventory) -> None:
    path = _external_only(sample, email="not-an-address", head="Kepala")
    checked = sample.cli("registry", "check")
    assert checked.exit_code == 2
    assert f"{path}" in checked.stderr and "email" in checked.stderr and "head" in checked.stderr


def test_a_hosted_agency_still_needs_its_service_data(sample: SampleInventory) -> None:
    data = sample.read("agencies/dinkes.yml")
    for key in ("services", "maklumat", "head"):
        del data[key]
    path = sample.write("agencies/dinkes.yml", data)
    checked = sample.cli("registry", "check")
    assert checked.exit_code == 2
    for key in ("services", "maklumat", "head"):
        assert f"{path.name}" in checked.stderr and key in checked.stderr


def test_verify_allow_private_is_a_boolean_setting(sample: SampleInventory) -> None:
    from provisioner.registry.load import load_inventory

    assert load_inventory(sample.root, sample.state_dir).settings.verify_allow_private
    data = sample.read("group_vars/all.yml")
    del data["verify_allow_private"]
    sample.write("group_vars/all.yml", data)
    assert not load_inventory(sample.root, sample.state_dir).settings.verify_allow_private
    data["verify_allow_private"] = "yes"
    sample.write("group_vars/all.yml", data)
    checked = sample.cli("registry", "check")
    assert checked.exit_code == 2 and "verify_allow_private" in checked.stderr
