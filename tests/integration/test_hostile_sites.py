"""Every kind of broken or hostile site of the kit (tests/hostile/server.py), swept at once
through the CLI beside one healthy lab site: the sweep finishes, writes every output,
gives each hostile site a verdict with a reason, and leaves the healthy site active.

The kit's sites are external agencies (slug, name and `external:` URL only) whose names
lie in the lab's zone: their A records are set in the lab's BIND, so the sweep looks them
up at the zone's own servers like any agency. One more name, without any record, is
NXDOMAIN (the other hostile DNS answers are tests/hostile_dns.py's, in test_dns_hostile).
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from lxml import html as lxml_html

from provisioner.verify.sweep import reasons, verify_all
from provisioner.verify.verifier import AgencyResult, Target, make_context, run, url_target
from tests import hostile_dns
from tests.hostile.server import KINDS, Authority, HostileKit, KitSite, kit_sites

from .conftest import CliResult, TestLab, run_cli
from .test_sweep import PROM_SAMPLE
from .test_verify import Sites, SiteSpec, dns_update, served_sites

pytestmark = pytest.mark.integration

FIRST_KIT_ADDRESS = 150  # PREFIX.150 onwards: clear of the lab's own addresses
TIMEOUT = "2"
DNS_KINDS = ("nxdomain",)

# What the sweep must conclude about each kind. "inactive": not active, with a reason
# containing the given text (None: any reason). "active": a hostile but valid page a
# browser shows (its bytes must not break the verifier).
INACTIVE = {
    "hang": "does not answer", "drip": None, "huge": "https.content", "bomb": None,
    "loop": "https.status", "pingpong": "https.status", "bad-location": "https.status",
    "bad-status": None, "rogue-cert": "tls.chain", "wrong-name": "tls.name",
    "expired": "tls.chain", "http-500": "500", "empty": "https.content",
    "refused": "refused", "reset-at-accept": None, "reset-mid-body": None, "closed": None,
    "not-tls": "tls.chain", "http-only": "no HTTPS", "nxdomain": "dns.resolves",
    "many-headers": None, "long-header": None, "nul-header": None,
}
ACTIVE = ("ordinary", "gzip", "early-hints", "folded", "bare-lf", "charset-idna", "charset-utf7",
          "charset-unknown", "meta-utf16", "bad-links", "deep-json", "huge-title", "escapes",
          "deep-nesting")


@pytest.fixture(scope="module")
def hostile(lab: TestLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, HostileKit]]:
    root = tmp_path_factory.mktemp("hostile")
    zone = lab.inventory.settings.zone
    sites = kit_sites(lab.prefix, FIRST_KIT_ADDRESS, zone)
    kit = HostileKit(sites, Authority.create(root / "kit")).start()
    try:
        with served_sites(lab, root, [SiteSpec("lab-healthy")]) as served:
            write_external_agencies(served.inventory_dir, sites,
                                    [f"h-{kind}.{zone}" for kind in DNS_KINDS])
            dns_update(lab, {s.name: s.address for s in sites})
            try:
                yield served, kit
            finally:
                dns_update(lab, {s.name: None for s in sites})
    finally:
        kit.close()


def write_external_agencies(inventory_dir: Path, sites: list[KitSite],
                            dns_names: list[str]) -> None:
    """The least an external agency needs: slug, name and its URL."""
    urls = {s.name.split(".")[0]: s.url for s in sites}
    urls.update({name.split(".")[0]: f"https://{name}/" for name in dns_names})
    for slug, url in urls.items():
        (inventory_dir / "agencies" / f"{slug}.yml").write_text(yaml.safe_dump(
            {"slug": slug, "name": f"Situs uji {slug}", "external": url}))


def cli(served: Sites, kit: HostileKit, *args: str, inventory_dir: Path | None = None) -> CliResult:
    result = run_cli(inventory_dir or served.inventory_dir, served.lab.state_dir, *args,
                     "--ca", str(served.ca_file), "--ca", str(kit.authority.ca_file),
                     "--timeout", TIMEOUT)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def sweep(served: Sites, kit: HostileKit, *args: str, **kwargs: Path) -> CliResult:
    return cli(served, kit, "sweep", "--concurrency", "64", *args, **kwargs)


def test_the_kit_plays_at_least_30_kinds() -> None:
    assert len(KINDS) + len(DNS_KINDS) >= 30
    assert set(INACTIVE) | set(ACTIVE) == set(KINDS) | set(DNS_KINDS)


def test_a_sweep_of_every_kind_finishes_with_a_verdict_and_a_reason_for_each(
        hostile: tuple[Sites, HostileKit], tmp_path: Path) -> None:
    served, kit = hostile
    jsonl, prom, junit = tmp_path / "sweep.jsonl", tmp_path / "sweep.prom", tmp_path / "junit.xml"
    prom.write_text("provisioner_sweep_agencies 999\n")  # an older sweep's figures

    result = sweep(served, kit, "--format", "jsonl", "-o", str(jsonl))
    assert result.exit_code == 1, result.stderr  # not every site is active
    records = {r["agency"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert set(records) == {f"h-{k}" for k in (*KINDS, *DNS_KINDS)} | {"lab-healthy"}

    assert records["lab-healthy"]["active"], records["lab-healthy"]["reasons"]
    wrong = {}
    for kind, why in INACTIVE.items():
        record = records[f"h-{kind}"]
        if record["active"] or not record["reasons"] or \
                (why and not any(why in reason for reason in record["reasons"])):
            wrong[kind] = (record["active"], record["reasons"])
    for kind in ACTIVE:
        record = records[f"h-{kind}"]
        if not record["active"]:
            wrong[kind] = (record["active"], record["reasons"])
    assert not wrong, json.dumps(wrong, indent=1, ensure_ascii=True)

    assert sweep(served, kit, "--format", "prom", "-o", str(prom)).exit_code == 1
    samples = [line for line in prom.read_text().splitlines() if not line.startswith("#")]
    assert all(PROM_SAMPLE.match(line) for line in samples), samples
    assert f"provisioner_sweep_agencies {len(records)}" in samples
    assert 'provisioner_agency_active{agency="lab-healthy"} 1' in samples

    assert sweep(served, kit, "--format", "junit", "-o", str(junit)).exit_code == 1
    suites = {s.get("name"): s for s in ET.parse(junit).getroot().findall("testsuite")}
    assert set(suites) == set(records)
    assert int(suites["h-hang"].get("errors")) >= 1

    report = tmp_path / "laporan.html"
    assert sweep(served, kit, "--format", "html", "-o", str(report)).exit_code == 1
    page = report.read_text()
    rows = lxml_html.fromstring(page).xpath("//tbody")[0].findall("tr")
    assert len(rows) == len(records)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", page)
    assert "[bold red]Dinkes[/]" in page and "<script" not in page


def test_a_site_that_does_not_answer_is_stopped_with_its_reason(
        hostile: tuple[Sites, HostileKit]) -> None:
    served, kit = hostile
    result = cli(served, kit, "verify", "h-drip", "--format", "json", "--deadline", "1.5")
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and not document["active"]
    assert document["checks"][0] == {"id": "dns.resolves", "status": "pass",
                                     "detail": document["checks"][0]["detail"]}
    stopped = [c["detail"] for c in document["checks"] if c["status"] == "error"]
    assert any(d.startswith("no verdict within 1.5s (deadline passed while ")
               for d in stopped), stopped


def test_hostile_text_never_reaches_the_terminal_raw(hostile: tuple[Sites, HostileKit]) -> None:
    served, kit = hostile
    table = sweep(served, kit)
    shown = table.stdout + table.stderr
    assert "h-rogue-cert" in shown and "lab-healthy" in shown
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", shown)
    for target in ("h-rogue-cert", "h-escapes"):
        one = cli(served, kit, "verify", target)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", one.stdout + one.stderr)
    rogue = cli(served, kit, "verify", "h-rogue-cert", "--format", "json")
    chain = next(c for c in json.loads(rogue.stdout)["checks"] if c["id"] == "tls.chain")
    assert chain["status"] == "fail" and "\x1b]0;pwned" in chain["detail"]  # JSON keeps it, escaped
    assert "\\u001b]0;pwned" in rogue.stdout


def test_external_agencies_are_kept_off_inward_addresses_unless_allowed(
        hostile: tuple[Sites, HostileKit], tmp_path: Path) -> None:
    served, kit = hostile
    strict = tmp_path / "inventory-strict"
    strict.mkdir()
    for rel in ("hosts.yml", "group_vars/all.yml"):
        (strict / rel).parent.mkdir(parents=True, exist_ok=True)
        (strict / rel).write_text((served.inventory_dir / rel).read_text())
    settings = yaml.safe_load((strict / "group_vars/all.yml").read_text())
    settings["verify_allow_private"] = False
    (strict / "group_vars/all.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (strict / "agencies").mkdir()
    for slug in ("lab-healthy", "h-escapes"):
        (strict / "agencies" / f"{slug}.yml").write_text(
            (served.inventory_dir / "agencies" / f"{slug}.yml").read_text())

    result = sweep(served, kit, "--format", "json", inventory_dir=strict)
    records = {r["agency"]: r for r in json.loads(result.stdout)["records"]}
    assert records["lab-healthy"]["active"], records["lab-healthy"]["reasons"]  # hosted here
    refused = records["h-escapes"]
    assert not refused["active"] and refused["attempts"] == 1
    assert any("is a loopback address" in r and "verify_allow_private" in r
               for r in refused["reasons"]), refused["reasons"]
    assert {c["status"] for c in refused["checks"] if c["id"] == "dns.resolves"} == {"pass"}

    escapes = next(s for s in kit.sites if s.kind.name == "escapes")
    given = cli(served, kit, "verify", escapes.url, "--format", "json", inventory_dir=strict)
    assert json.loads(given.stdout)["active"], "a URL on the command line is the operator's"


def test_an_exception_in_one_site_is_that_sites_error_only(lab: TestLab) -> None:
    """A target the verifier cannot handle at all (its URL is not even text) beside a
    site on the kit: the first gets an error with a one-line reason, the second its own
    verdict."""
    good = url_target(f"http://{lab.prefix}.9:9/", None)  # nothing listens: refused
    broken = Target(None, f"{lab.prefix}.9", 12345, None)  # type: ignore[arg-type]

    async def both() -> list[tuple[AgencyResult, int]]:
        ctx = make_context(None, timeout=1)
        try:
            return await verify_all([broken, good], ctx, 2)
        finally:
            await ctx.close()

    (crashed, attempts), (refused, _) = run(both())
    assert attempts == 2 and not crashed.active  # retried inside its deadline
    assert "https.status: verification failed: AttributeError: 'int' object has no " \
           "attribute 'decode'" in reasons(crashed)
    assert refused.url == good.url and "verification failed" not in json.dumps(refused.to_dict())


def test_sites_on_a_server_that_does_not_answer_share_its_verdict(
        hostile: tuple[Sites, HostileKit]) -> None:
    """40 agencies on one host that accepts and never answers: one re-probe, and every
    site gets the same verdict instead of each waiting its own timeouts."""
    _, kit = hostile
    hang = next(s for s in kit.sites if s.kind.name == "hang")
    targets = [url_target(f"https://{hang.address}/agency-{i}/", None) for i in range(40)]

    async def sweep_them() -> list[tuple[AgencyResult, int]]:
        ctx = make_context(None, timeout=float(TIMEOUT))
        try:
            return await verify_all(targets, ctx, 40)
        finally:
            await ctx.close()

    outcomes = run(sweep_them())
    verdicts = {r.status("https.status").value for r, _ in outcomes}
    assert verdicts == {"error"} and {a for _, a in outcomes} == {1}
    shared = [r for r, _ in outcomes if "does not answer" in " ".join(reasons(r))]
    assert len(shared) >= 32, [reasons(r) for r, _ in outcomes][:3]  # 8 at a time on one address


# What the sweep must conclude about each kind of hostile DNS (tests/hostile_dns.py) that
# answers for an agency's name: an answer that survives the bad replies gives an active
# site, anything else an inactive one with a dns.* reason.
DNS_ACTIVE = ("healthy", "truncated", "spoofed")


def test_every_kind_of_hostile_dns_in_one_sweep(hostile: tuple[Sites, HostileKit],
                                                tmp_path: Path) -> None:
    """An inventory whose only nameserver is the hostile DNS server: one external agency
    per kind of broken answer (all pointing at one healthy kit site), and the lab's
    healthy site, whose record it serves as the lab does."""
    served, kit = hostile
    zone = served.lab.inventory.settings.zone
    names = {kind: f"d-{kind}.{zone}" for kind in hostile_dns.KINDS}
    target = KitSite(KINDS["ordinary"], f"d-target.{zone}", f"{served.lab.prefix}.190",
                     also_for=tuple(names.values()))
    web = served.inventory.hosts["web1"].public_ipv4
    inventory = tmp_path / "inventory-hostile-dns"
    shutil.copytree(served.inventory_dir, inventory, ignore=shutil.ignore_patterns("h-*.yml"))
    write_external_agencies(inventory, [], list(names.values()))
    dns_kit = HostileKit([target], kit.authority).start()
    try:
        with hostile_dns.start("127.0.0.1", 0) as server:
            ns = server.zone(zone)
            server.add(served.fqdn("lab-healthy"), hostile_dns.records(f"A {web}"))
            for kind, name in names.items():
                server.add(name, hostile_dns.KINDS[kind](target.address))
            settings = yaml.safe_load((inventory / "group_vars/all.yml").read_text())
            only = {"name": ns, "address": server.address, "port": server.port}
            settings.update(dns_primary=only, nameservers=[dict(only)])
            (inventory / "group_vars/all.yml").write_text(yaml.safe_dump(settings))
            result = sweep(served, kit, "--format", "json", inventory_dir=inventory)
    finally:
        dns_kit.close()
    records = {r["agency"]: r for r in json.loads(result.stdout)["records"]}
    assert set(records) == {f"d-{k}" for k in names} | {"lab-healthy"}
    wrong = {a: (r["active"], r["reasons"]) for a, r in records.items()
             if r["active"] != (a == "lab-healthy" or a.removeprefix("d-") in DNS_ACTIVE)
             or (not r["active"] and not any(x.startswith("dns.") for x in r["reasons"]))}
    assert not wrong, json.dumps(wrong, indent=1)
