"""Benchmark: Ansible's start-up floor, and deploying 40 agencies' sites vs 1 on one host.

Brings up a private lab (real OpenSSH + nginx on PREFIX.(X+offset)), then per round:

* floor: the no-op play (``playbooks/ping.yml``: one ping per host) against web1 and
  web2, pipelining on, through ansible-runner exactly as provisioner runs it;
* 1 agency: ``deploy_sites`` of one new agency (render, bundle, copy, module: files,
  nginx -t, one reload), then the same again (nothing to change, no reload);
* 40 agencies on the same host: the same, 40 new agencies in one run.

The sites are wiped (``lab reset``) between rounds. Prints medians (and min/max) in
milliseconds, the tasks each host ran (constant: one transfer + one module call,
however many agencies) and the 40-vs-1 ratio.

    .venv/bin/python benchmarks/ansible_floor.py [--prefix 127.0.1] [--agencies 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provisioner.hosts import ansible  # noqa: E402
from provisioner.hosts.deploy import deploy_sites, site_bundle  # noqa: E402
from provisioner.lab.control import Lab  # noqa: E402
from provisioner.registry.load import load_inventory  # noqa: E402
from provisioner.registry.models import Inventory  # noqa: E402
from tests.integration.conftest import SAMPLE_INVENTORY, make_test_inventory  # noqa: E402


def write_agencies(inventory_dir: Path, count: int) -> None:
    """``count`` + 1 agencies on web1 (bench-00.. and solo), from the sample's dinkes."""
    sample = yaml.safe_load((SAMPLE_INVENTORY / "agencies" / "dinkes.yml").read_text())
    for slug in [f"bench-{i:02d}" for i in range(count)] + ["solo"]:
        data = {**sample, "slug": slug, "host": "web1"}
        (inventory_dir / "agencies" / f"{slug}.yml").write_text(
            yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def timed(func) -> tuple[float, object]:
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000, result


def deploy(inv: Inventory, slugs: list[str], samples: dict[str, list[float]], label: str,
           tasks: dict[str, int]) -> None:
    bundles = [site_bundle(inv.agencies[s], inv, tls_ready=False) for s in slugs]
    ms, report = timed(lambda: deploy_sites(inv, bundles))
    assert {a.status for a in report.agencies.values()} == {"changed"}, report.failed
    assert report.hosts["web1"].reloaded
    samples[f"{label}: first deploy"].append(ms)
    tasks[label] = report.run.stats["web1"].ok
    ms, again = timed(lambda: deploy_sites(inv, bundles))
    assert {a.status for a in again.agencies.values()} == {"ok"}
    assert not again.hosts["web1"].reloaded
    samples[f"{label}: re-run, nothing to change"].append(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default=os.environ.get("PROVISIONER_TEST_NET", "127.0.1"),
                        help="three octets inside 127.0.0.0/8 for the lab's addresses")
    parser.add_argument("--offset", type=int, default=60,
                        help="added to the sample's last octets (keeps clear of test labs)")
    parser.add_argument("--agencies", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    samples: dict[str, list[float]] = defaultdict(list)
    tasks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ab-", dir="/tmp") as tmp:
        inventory_dir = make_test_inventory(Path(tmp) / "inventory", args.prefix, args.offset,
                                            agencies=False)
        write_agencies(inventory_dir, args.agencies)
        inv = load_inventory(inventory_dir, Path(tmp) / "state")
        lab = Lab(inv)
        many = [f"bench-{i:02d}" for i in range(args.agencies)]
        try:
            lab.up()
            for _ in range(args.rounds):
                ms, run = timed(lambda: ansible.ping(inv, ["web1", "web2"]))
                assert run.ok, run.output_tail
                samples["floor: no-op play, 2 hosts"].append(ms)
                deploy(inv, ["solo"], samples, "1 agency", tasks)
                deploy(inv, many, samples, f"{args.agencies} agencies", tasks)
                lab.reset()
        finally:
            lab.down()

    print(f"Ansible via ansible-runner, pipelining on, {args.rounds} rounds, real OpenSSH + "
          f"nginx on {args.prefix}.x; milliseconds")
    print(f"{'measure':44} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in samples.items():
        print(f"{name:44} {statistics.median(values):8.0f} {min(values):8.0f} {max(values):8.0f}")
    print("tasks on web1 per run: " + ", ".join(f"{k}: {v}" for k, v in tasks.items()))
    one = statistics.median(samples["1 agency: first deploy"])
    forty = statistics.median(samples[f"{args.agencies} agencies: first deploy"])
    floor = statistics.median(samples["floor: no-op play, 2 hosts"])
    print(f"{args.agencies} agencies cost {forty / one:.2f}x one agency "
          f"({(forty - one) / (args.agencies - 1):.0f} ms per extra agency); "
          f"the floor is {floor / one:.0%} of a 1-agency deploy")


if __name__ == "__main__":
    main()
