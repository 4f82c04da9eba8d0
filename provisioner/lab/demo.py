"""`provisioner demo`: the whole job on the built-in lab, start to finish.

Brings the lab up, onboards every sample agency, sweeps, writes the leadership
report (HTML, Bahasa Indonesia) and returns what a new sysadmin needs to look
at the result: the figures, the report's path and one site to fetch by hand.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..lifecycle import onboard
from ..registry.load import ensure_state_dir
from ..registry.models import Inventory
from ..verify import history, sweep
from ..verify.content import load_rules
from ..verify.report import html as report_html
from ..verify.report import write_atomic
from .control import Lab, UpReport


@dataclass(frozen=True)
class DemoResult:
    lab: UpReport
    onboarding: onboard.OnboardResult
    onboard_seconds: float
    sweep: sweep.SweepResult
    report_path: Path
    example_url: str
    example_curl: str


def default_report_path(inventory: Inventory) -> Path:
    return inventory.state_dir / "demo" / "laporan.html"


def example_commands(inventory: Inventory, slug: str | None = None) -> tuple[str, str]:
    """One onboarded site's URL and the curl line that fetches it through the lab."""
    hosted = [a for a in inventory.agencies.values() if a.hosted]
    agency = inventory.agencies[slug] if slug else \
        next((a for a in hosted if a.slug == "dinkes"), hosted[0])
    address = inventory.hosts[agency.host].public_ipv4
    url = f"https://{agency.fqdn}/"
    roots = inventory.settings.trust_roots
    ca = f" --cacert {shlex.quote(str(roots[0]))}" if roots else ""
    return url, f"curl --resolve {agency.fqdn}:443:{address}{ca} {url}"


def run_demo(inventory: Inventory, report_path: Path | None = None,
             report: onboard.Report = lambda _line: None, lang: str = "id",
             command: str = "provisioner demo") -> DemoResult:
    if inventory.settings.lab is None:
        raise UsageError("the demo runs on the built-in lab, and this inventory has no 'lab:' "
                         "section", hint="use the sample inventory (./inventory)")
    ensure_state_dir(inventory.state_dir)
    lab = Lab(inventory).up()
    report(f"lab: up in {lab.seconds:.1f} s ({lab.lab_dir})")
    started = time.monotonic()
    with onboard.Session(inventory, report, command=command) as session:
        result = session.apply(session.plan(None))
    onboard_seconds = time.monotonic() - started
    swept = sweep.run_sweep(inventory)
    history.record_sweep(inventory.state_dir, swept)
    path = report_path or default_report_path(inventory)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, report_html.render(swept, history.sweep_trend(inventory.state_dir),
                                          load_rules(), inventory.settings.zone, lang))
    url, curl = example_commands(inventory)
    return DemoResult(lab, result, onboard_seconds, swept, path, url, curl)
