"""Benchmark: onboarding the DNS of 40 agencies as one RFC 2136 update message.

Brings up a private lab (real BIND primary + secondary, on PREFIX.(X+offset)),
then per round:

* batch: ``dns_step`` for 40 new agencies (preflight, AXFR, plan, one signed
  update, wait until ns1 and ns2 serve it), then the same again (all noop);
* one-by-one: the same 40 creations sent as 40 update messages, for the ratio.

Records are removed between rounds. Prints medians (and min/max) in milliseconds.
Goal: the batch, propagation included, well under a second.

    .venv/bin/python benchmarks/dns_batch.py [--prefix 127.0.1] [--agencies 40] [--rounds 5]
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

from provisioner.dns import plan as dnsplan
from provisioner.dns import step as dnsops  # noqa: E402
from provisioner.dns.client import DnsClient  # noqa: E402
from provisioner.lab.control import Lab  # noqa: E402
from provisioner.registry.load import load_inventory  # noqa: E402
from provisioner.registry.models import Inventory  # noqa: E402
from tests.integration.conftest import SAMPLE_INVENTORY, make_test_inventory  # noqa: E402


def write_agencies(inventory_dir: Path, count: int) -> None:
    sample = yaml.safe_load((SAMPLE_INVENTORY / "agencies" / "dinkes.yml").read_text())
    for i in range(count):
        slug = f"bench-{i:02d}"
        data = {**sample, "slug": slug, "host": "web1" if i % 2 else "web2"}
        (inventory_dir / "agencies" / f"{slug}.yml").write_text(
            yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def timed(func) -> tuple[float, object]:
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000, result


def remove_all(inv: Inventory, client: DnsClient) -> None:
    """Delete every benchmark record (force: removing all owned records trips the gate)."""
    result = dnsops.dns_step(inv, list(inv.agencies.values()), remove=True, force=True,
                             client=client)
    assert not result.failed, result.outcomes


def batch_round(inv: Inventory, client: DnsClient, samples: dict[str, list[float]]) -> None:
    before = client.sent["update"]
    ms, result = timed(lambda: dnsops.dns_step(inv, None, client=client))
    assert not result.failed and client.sent["update"] - before == 1, "not one update message"
    assert result.plan.plan.counts()["create"] == 2 * len(inv.agencies)
    samples["batch: plan + 1 update + propagation"].append(ms)
    samples["  of which propagation wait"].append(result.propagation.seconds * 1000)
    ms, again = timed(lambda: dnsops.dns_step(inv, None, client=client))
    assert not again.plan.plan.has_changes
    samples["re-run, nothing to change"].append(ms)


def one_by_one_round(inv: Inventory, client: DnsClient, samples: dict[str, list[float]]) -> None:
    dns_plan = dnsops.plan_dns(inv, None, client=client)
    batches = [dnsplan.update_batch(inv.settings.zone, dns_plan.plan.for_agency(slug))
               for slug in dns_plan.plan.agencies()]
    one = dnsplan.update_batch(inv.settings.zone, dns_plan.plan)
    ms_batch, _ = timed(lambda: client.update(one))
    samples["update message only: 1 for all"].append(ms_batch)
    remove_all(inv, client)
    ms_each, _ = timed(lambda: [client.update(b) for b in batches])
    samples[f"update messages only: {len(batches)} one by one"].append(ms_each)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default=os.environ.get("PROVISIONER_TEST_NET", "127.0.1"),
                        help="three octets inside 127.0.0.0/8 for the lab's addresses")
    parser.add_argument("--offset", type=int, default=50,
                        help="added to the sample's last octets (keeps clear of test labs)")
    parser.add_argument("--agencies", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        inventory_dir = make_test_inventory(Path(tmp) / "inventory", args.prefix, args.offset,
                                            agencies=False)
        write_agencies(inventory_dir, args.agencies)
        inv = load_inventory(inventory_dir, Path(tmp) / "state")
        lab = Lab(inv)
        try:
            lab.up()
            client = DnsClient(inv.settings)
            samples: dict[str, list[float]] = defaultdict(list)
            for _ in range(args.rounds):
                batch_round(inv, client, samples)
                remove_all(inv, client)
                one_by_one_round(inv, client, samples)
                remove_all(inv, client)
        finally:
            lab.down()

    print(f"DNS batch of {args.agencies} agencies ({2 * args.agencies} records), "
          f"{args.rounds} rounds, real BIND on {args.prefix}.x; milliseconds")
    print(f"{'measure':44} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in samples.items():
        print(f"{name:44} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    single = statistics.median(samples["update message only: 1 for all"])
    many = statistics.median(samples[f"update messages only: {args.agencies} one by one"])
    print(f"one message vs {args.agencies} messages: {many / single:.1f}x faster")


if __name__ == "__main__":
    main()
