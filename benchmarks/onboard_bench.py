"""Benchmark: what a regency-sized onboarding run costs, end to end, on the lab.

Brings up a private lab (real BIND ns1 + ns2, OpenSSH + nginx web hosts, Pebble) on
PREFIX.(X+offset) and runs ``provisioner onboard ... --yes --timings --format json``
as a child process under ``/usr/bin/time -v`` (Python start-up included, as an
operator sees it). 40 agencies are generated from the sample's agency files
(``bench-01``..``bench-40``; spread over H hosts, bench-i goes to web((i-1) % H + 1)).
Per round, each case from nothing unless it says re-run:

* 1 agency (``onboard bench-01``, on web1);
* 40 agencies on 2 hosts (``onboard --all``), then the same again: the idempotent
  re-run (zero changes, no reload, every agency ok);
* 40 agencies on 1 host, and on 4 hosts (``--hosts``): the per-host cost;
* 20 agencies on 2 hosts: held out of the fit, to check it.

"From nothing" = ``Lab.reset()`` (sites, vhosts, DNS records, installed
certificates) plus a new ACME account (Pebble would otherwise reuse up to half of
the last round's valid authorizations and skip their challenges); a read-only plan
then has to show only creates. TLS mode http-01 (one certificate per agency).

Goals (asserted, PASS/FAIL printed, exit 1 on a miss): 40 agencies <= 3x one
agency; the re-run <= 0.5x the first 40-agency run. From the medians it fits
time = fixed + per_host * hosts + per_agency * agencies (wall and controller CPU)
and projects a province and all of Indonesia.

    .venv/bin/python benchmarks/onboard_bench.py [--prefix 127.0.12] [--offset 150]
        [--rounds 3] [--agencies 40] [--hosts 4] [--write-results]

--write-results rewrites the "Onboarding" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import labkit
from labkit import TimedRun, markdown_table

from provisioner.lab.control import Lab
from provisioner.lifecycle import onboard  # labkit has put the repository on sys.path
from provisioner.registry.load import load_inventory
from provisioner.registry.models import MAX_PARALLEL_ORDERS, Inventory

SECTION = "onboard_bench"
PHASES = onboard.PHASES  # plan, dns, web, tls, verify
BATCH_GOAL = 3.0  # 40 agencies <= 3x one agency
RERUN_GOAL = 0.5  # re-run <= 0.5x the first run

# Scale on paper (see README): a province = 10 regencies x 40 agencies on 10 hosts;
# Indonesia = ~550 regional governments x 40 agencies, one host per regency.
SCENARIOS = (("province: 10 regencies", 10, 10 * 40, 10),
             ("Indonesia: 550 regional governments", 550, 550 * 40, 550))
ANSIBLE_MAX_FORKS = 50  # provisioner.hosts.ansible: forks = min(hosts, 50)
LE_ORDERS_PER_3H = 300  # Let's Encrypt: new orders per account per 3 hours
LE_CERTS_PER_DOMAIN_WEEK = 50  # certificates per registered domain per 7 days
LE_REGISTRATIONS_PER_IP_3H = 10  # new accounts per IPv4 address per 3 hours


class BenchError(Exception):
    """A run that did not do what the benchmark measures (its numbers would mean nothing)."""


# =========================================================================== cases


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    agencies: int  # bench-01.. bench-NN
    hosts: int  # the agencies are spread over web1..web<hosts> in turn
    rerun: bool = False  # the run right after the previous case, on what it left

    def selection(self, total: int) -> list[str]:
        return ["--all"] if self.agencies == total else slugs(self.agencies)


def slugs(count: int) -> list[str]:
    return [f"bench-{i:02d}" for i in range(1, count + 1)]


def make_cases(total: int, max_hosts: int) -> tuple[Case, ...]:
    """1 agency; the batch and its re-run; the batch on 1 (and ``max_hosts``) hosts;
    half the batch on 2 hosts (held out of the fit, to check it)."""
    cases = [Case("one", "1 agency, 1 host", 1, 1),
             Case("batch", f"{total} agencies, 2 hosts", total, 2),
             Case("rerun", f"{total} agencies, 2 hosts, re-run", total, 2, rerun=True),
             Case("hosts1", f"{total} agencies, 1 host", total, 1)]
    if max_hosts > 2:
        cases.append(Case(f"hosts{max_hosts}", f"{total} agencies, {max_hosts} hosts", total,
                          max_hosts))
    cases.append(Case("check", f"{total // 2} agencies, 2 hosts (fit check)", total // 2, 2))
    return tuple(cases)


@dataclass
class Sample:
    run: TimedRun
    timings: Mapping[str, float]

    @property
    def other(self) -> float:
        """Wall time outside the tool's phases: start-up, imports, inventory load, output."""
        return self.run.wall - sum(self.timings.get(p, 0.0) for p in PHASES)


@dataclass
class Series:
    case: Case
    samples: list[Sample] = field(default_factory=list)

    def median(self, value) -> float:
        return statistics.median(value(s) for s in self.samples)

    @property
    def best_wall(self) -> float:
        """The least disturbed round: other work on the machine only ever adds time."""
        return min(s.run.wall for s in self.samples)

    @property
    def best_cpu(self) -> float:
        return min(s.run.cpu for s in self.samples)

    @property
    def wall(self) -> float:
        return self.median(lambda s: s.run.wall)

    @property
    def cpu(self) -> float:
        return self.median(lambda s: s.run.cpu)

    def phase(self, name: str) -> float:
        return self.median(lambda s: s.timings.get(name, 0.0))


# =========================================================================== the bench lab


@dataclass
class Bench:
    lab: Lab
    state_dir: Path
    inventory_dirs: Mapping[int, Path]  # hosts used -> inventory folder (one lab, one state)

    def inventory(self, hosts: int) -> Inventory:
        return load_inventory(self.inventory_dirs[hosts], self.state_dir)

    def from_nothing(self, case: Case) -> None:
        """Wipe what onboarding made, then prove it: the plan may only create, everything."""
        self.lab.reset()
        for folder in ("acme", "certs"):  # the ACME account and the controller's cert records
            shutil.rmtree(self.state_dir / folder, ignore_errors=True)
        inventory = self.inventory(case.hosts)
        selected = [inventory.agencies[s] for s in slugs(case.agencies)]
        with onboard.Session(inventory) as session:
            oplan = session.plan(selected)
        require_only_creates(oplan, [a.slug for a in selected])

    def onboard(self, case: Case, total: int) -> Sample:
        argv = [*labkit.PROVISIONER, "--inventory", str(self.inventory_dirs[case.hosts]),
                "--state-dir", str(self.state_dir), "onboard", *case.selection(total),
                "--yes", "--timings", "--format", "json"]
        run = labkit.timed_run(argv)
        if run.returncode != 0 or not run.stdout.strip():
            raise BenchError(f"{case.label}: exit {run.returncode}: {run.stderr.strip()[-800:]}")
        result = json.loads(run.stdout)
        wanted = slugs(case.agencies)
        (require_converged if case.rerun else require_onboarded)(result, wanted, case.label)
        return Sample(run, result["timings"])


def require_only_creates(oplan: onboard.OnboardPlan, wanted: Sequence[str]) -> None:
    actions = {c.action for c in oplan.plan}
    kinds = {(c.agency, c.kind) for c in oplan.plan if c.action == "create"}
    missing = [(s, k) for s in wanted for k in ("dns", "site", "vhost", "cert")
               if (s, k) not in kinds]
    if actions != {"create"} or missing or oplan.host_errors:
        raise BenchError(f"reset left something behind: actions {sorted(actions)}, "
                         f"not created {missing[:4]}, host errors {dict(oplan.host_errors)}")


def require_onboarded(result: Mapping[str, Any], wanted: Sequence[str], label: str) -> None:
    """Every agency changed and verified active; every involved host reloaded."""
    statuses = {slug: o["status"] for slug, o in result["agencies"].items()}
    verified = {o["agency"] for o in result["outcomes"]
                if o["kind"] == "verify" and o["status"] == "ok"}
    if result["failed"] or sorted(statuses) != sorted(wanted) \
            or set(statuses.values()) != {"changed"} or verified != set(wanted) \
            or not result["reloads"] or 0 in result["reloads"].values():
        failed = [o for o in result["outcomes"] if o["status"] == "failed"][:3]
        raise BenchError(f"{label}: not every agency onboarded and active: {failed}")


def require_converged(result: Mapping[str, Any], wanted: Sequence[str], label: str) -> None:
    """Zero changes planned, no reload anywhere, every agency ok."""
    counts = result["plan"]["counts"]
    statuses = {slug: o["status"] for slug, o in result["agencies"].items()}
    changes = sum(counts[a] for a in ("create", "update", "delete"))
    if result["failed"] or changes or any(result["reloads"].values()) \
            or sorted(statuses) != sorted(wanted) or set(statuses.values()) != {"ok"}:
        raise BenchError(f"{label}: not converged: {changes} change(s), reloads "
                         f"{result['reloads']}, statuses {sorted(set(statuses.values()))}")


def build_bench(root: Path, prefix: str, offset: int, cases: Sequence[Case]) -> Bench:
    """One inventory folder per number of hosts used, all with every lab host and the same
    state dir (so one lab); agency bench-i goes to web((i - 1) % hosts + 1)."""
    total, web_hosts = max(c.agencies for c in cases), max([2, *(c.hosts for c in cases)])
    dirs = {}
    for hosts in sorted({c.hosts for c in cases}):
        spread = {s: f"web{i % hosts + 1}" for i, s in enumerate(slugs(total))}
        dirs[hosts] = labkit.make_inventory(root / f"inventory-{hosts}-hosts", prefix, offset,
                                            spread, web_hosts)
    state_dir = root / "state"
    return Bench(Lab(load_inventory(dirs[1], state_dir)), state_dir, dirs)


def run_rounds(bench: Bench, cases: Sequence[Case], total: int, rounds: int
               ) -> dict[str, Series]:
    """Every case once per round, in order, so drifting machine load touches all alike."""
    series = {c.key: Series(c) for c in cases}
    for number in range(1, rounds + 1):
        for case in cases:
            if not case.rerun:
                bench.from_nothing(case)
            sample = bench.onboard(case, total)
            series[case.key].samples.append(sample)
            print(f"round {number}: {case.label}: {sample.run.wall:.2f} s", flush=True)
    return series


# =========================================================================== analysis


@dataclass(frozen=True)
class Fit:
    """time = fixed + per_host * hosts + per_agency * agencies (seconds)."""

    fixed: float
    per_host: float
    per_agency: float

    def __call__(self, hosts: int, agencies: int) -> float:
        return self.fixed + self.per_host * hosts + self.per_agency * agencies

    @classmethod
    def solve(cls, one: float, by_hosts: Mapping[int, float], total: int) -> Fit:
        """From T(1 host, 1 agency) and T(h hosts, N agencies) for several h: per host is
        the slope over h (least squares), per agency the step from 1 to N on one host."""
        per_host = statistics.linear_regression(list(by_hosts), list(by_hosts.values())).slope
        per_agency = (by_hosts[1] - one) / (total - 1)
        return cls(one - per_host - per_agency, per_host, per_agency)


def batch_by_hosts(series: Mapping[str, Series], total: int) -> dict[int, Series]:
    """The from-nothing runs of all N agencies, by the number of hosts they were spread on."""
    return {s.case.hosts: s for s in series.values()
            if s.case.agencies == total and not s.case.rerun}


def fits(series: Mapping[str, Series], total: int) -> tuple[Fit, Fit]:
    """(wall fit, controller CPU fit)."""
    by_hosts = batch_by_hosts(series, total)

    def solve(value) -> Fit:
        return Fit.solve(value(series["one"]), {h: value(s) for h, s in by_hosts.items()},
                         total)
    return solve(lambda s: s.best_wall), solve(lambda s: s.best_cpu)


@dataclass(frozen=True)
class Goal:
    name: str
    measured: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


def goals(series: Mapping[str, Series], total: int) -> list[Goal]:
    batch, one, rerun = series["batch"].wall, series["one"].wall, series["rerun"].wall
    return [Goal(f"{total} agencies / 1 agency (wall, medians)", batch / one, BATCH_GOAL),
            Goal(f"re-run / first run of {total} (wall, medians)", rerun / batch, RERUN_GOAL)]


def tree_peak(series: Series) -> float:
    return max(s.run.tree_rss_mb for s in series.samples)


def memory_per_host(series: Mapping[str, Series], total: int) -> float:
    """MB the process tree grows by per host (one more Ansible fork and SSH agent): the
    slope of the peaks over the number of hosts."""
    by_hosts = batch_by_hosts(series, total)
    return statistics.linear_regression(list(by_hosts),
                                        [tree_peak(s) for s in by_hosts.values()]).slope


# =========================================================================== report


def runs_table(series: Mapping[str, Series]) -> str:
    rows = []
    for s in series.values():
        walls = [x.run.wall for x in s.samples]
        rows.append([s.case.label, len(s.samples), f"{s.wall:.2f}", f"{min(walls):.2f}",
                     f"{max(walls):.2f}", f"{s.cpu:.2f}",
                     f"{max(x.run.max_rss_mb for x in s.samples):.0f}",
                     f"{max(x.run.tree_rss_mb for x in s.samples):.0f}"])
    return markdown_table(["case", "runs", "wall s (median)", "min", "max",
                           "controller CPU s", "peak RSS MB (largest process)",
                           "peak RSS MB (process tree)"], rows)


def phases_table(series: Mapping[str, Series]) -> str:
    rows = [[s.case.label, f"{s.median(lambda x: x.other):.2f}",
             *(f"{s.phase(p):.2f}" for p in PHASES), f"{s.wall:.2f}"]
            for s in series.values()]
    return markdown_table(["case", "start-up + load + output", *PHASES, "wall"], rows)


def goals_table(found: Sequence[Goal]) -> str:
    return markdown_table(["goal", "measured", "target", "verdict"],
                          [[g.name, f"{g.measured:.2f}x", f"<= {g.limit}x", g.verdict]
                           for g in found], align="lrrl")


def fit_text(series: Mapping[str, Series], wall: Fit, cpu: Fit, total: int) -> str:
    check = series["check"].case
    predicted, measured = wall(check.hosts, check.agencies), series["check"].best_wall
    hosts = ", ".join(str(h) for h in sorted(batch_by_hosts(series, total)))
    return (f"Fit from each case's best round (the least disturbed by other work on the "
            f"machine; the medians above are what an operator sees): per agency from 1 vs "
            f"{total} agencies on one host, per host from {total} agencies on {hosts} hosts "
            f"(least-squares slope), fixed = the 1-agency run minus one host and one "
            f"agency:\n\n"
            + markdown_table(["", "fixed s", "per host s", "per agency s"], [
                ["wall", f"{wall.fixed:.2f}", f"{wall.per_host:.2f}", f"{wall.per_agency:.3f}"],
                ["controller CPU", f"{cpu.fixed:.2f}", f"{cpu.per_host:.2f}",
                 f"{cpu.per_agency:.3f}"]])
            + f"\n\nCheck at a fourth point, {check.label}: the fit predicts {predicted:.2f} s, "
              f"measured {measured:.2f} s ({(predicted - measured) / measured:+.0%}).")


def le_orders_hours(orders: int, accounts: int) -> float:
    """Hours until every order is placed: each account bursts 300, then refills 1 per 36 s."""
    per_account = -(-orders // accounts)
    refill = 3 * 3600 / LE_ORDERS_PER_3H
    return max(0, per_account - LE_ORDERS_PER_3H) * refill / 3600


def registrations_hours(accounts: int) -> float:
    refill = 3 * 3600 / LE_REGISTRATIONS_PER_IP_3H
    return max(0, accounts - LE_REGISTRATIONS_PER_IP_3H) * refill / 3600


def projection(series: Mapping[str, Series], wall: Fit, cpu: Fit, cores: int,
               per_host_mb: float) -> str:
    regency = series["hosts1"]
    tree_one_host = tree_peak(regency)
    rows = []
    for name, regencies, agencies, hosts in SCENARIOS:
        forks = min(hosts, ANSIBLE_MAX_FORKS)
        rows.append([
            name, hosts, agencies,
            f"{wall(hosts, agencies) / 60:.1f} min",
            f"{cpu(hosts, agencies) / cores / 60:.1f} min",
            f"{regencies * regency.best_wall / 60:.1f} min",
            f"{tree_one_host + (forks - 1) * per_host_mb:.0f} MB ({forks} forks)",
            f"{le_orders_hours(agencies, 1):.0f} h",
            f"{registrations_hours(regencies):.0f} h",
        ])
    return markdown_table(
        ["scenario", "hosts", "agencies (http-01 certificates)",
         "one run: fixed + per_host*H + per_agency*A", f"controller CPU floor ({cores} cores)",
         "one run per regency, in turn", "peak memory, one run",
         "Let's Encrypt: orders wait, 1 account", "Let's Encrypt: 1 account per regency, "
         "registrations wait (1 IPv4)"], rows, align="lrrrrrrrr") + (
        f"\n\nA regency run alone ({regency.case.label}, best round) took "
        f"{regency.best_wall:.1f} s wall and {regency.best_cpu:.1f} s controller CPU.")


def report(series: Mapping[str, Series], total: int, rounds: int, prefix: str,
           load: tuple[str, str]) -> str:
    wall, cpu = fits(series, total)
    cores = int(labkit.machine()["cores"])
    found = goals(series, total)
    per_host_mb = memory_per_host(series, total)
    batch = series["batch"]
    return "\n".join([
        "## Onboarding (issue 9)",
        "",
        f"{labkit.machine_line()}; load average {load[0]} before, {load[1]} after (other "
        f"work on the machine is noise in wall times). Lab (BIND ns1 + ns2, "
        f"{max(s.case.hosts for s in series.values())} OpenSSH + nginx web hosts, Pebble) on "
        f"{prefix}.x, on the same machine as the controller. Each run is "
        f"`provisioner onboard ... --yes --timings --format json` as a child process under "
        f"`/usr/bin/time -v`; {rounds} rounds, every case once per round; from nothing = "
        f"`Lab.reset()` + a new ACME account, checked by a plan of creates only. "
        f"TLS mode http-01. Produced by `benchmarks/onboard_bench.py` (`make bench`).",
        "",
        "### Goals",
        "",
        goals_table(found),
        "",
        "### Runs",
        "",
        runs_table(series),
        "",
        "Controller CPU: user + system of the `provisioner` process and its children "
        "(Ansible, ssh), from `/usr/bin/time -v`; the lab's servers are not counted. "
        "Peak RSS (largest process): `/usr/bin/time -v` \"Maximum resident set size\". "
        "Process tree: the sum over the process and its descendants, sampled every 0.1 s "
        "(pages shared by forked Ansible workers count once per process: an upper bound).",
        "",
        "### Where the time goes (medians, seconds)",
        "",
        phases_table(series),
        "",
        f"Phases from the tool's own `--timings` (JSON \"timings\"). In the {batch.case.label} "
        f"run: plan (SSH facts from both hosts, DNS preflight), dns (one signed update + wait "
        f"for ns1 and ns2), web (one Ansible run: every host's files in one transfer, "
        f"`nginx -t`, one reload per host), tls ({total} ACME orders, up to "
        f"{MAX_PARALLEL_ORDERS} at once, HTTP-01, then a second Ansible run to "
        f"switch the vhosts to HTTPS and the served-serial check), verify (every site: DNS at "
        f"both nameservers, redirect, TLS, content). The re-run runs no Ansible and orders "
        f"nothing: its cost is start-up, the plan (facts) and verify.",
        "",
        "### Scale on paper (a projection, not a measurement)",
        "",
        fit_text(series, wall, cpu, total),
        "",
        projection(series, wall, cpu, cores, per_host_mb),
        "",
        SCALE_NOTES.format(per_host_mb=per_host_mb, forks=ANSIBLE_MAX_FORKS,
                           orders=MAX_PARALLEL_ORDERS, cores=cores,
                           registrations=LE_REGISTRATIONS_PER_IP_3H,
                           per_domain=LE_CERTS_PER_DOMAIN_WEEK,
                           orders_per_3h=LE_ORDERS_PER_3H),
    ])


SCALE_NOTES = """\
How to read it. The one-run column applies the fitted formula as is; the CPU floor is
the fitted controller CPU divided by the cores (no run can be faster on this machine);
"one run per regency" is how the tool is used today (one inventory = one zone), the
best 40-agency-on-1-host run times the number of regencies, one after another.
Peak memory adds the measured growth per extra host ({per_host_mb:.0f} MB: one more
Ansible fork and SSH agent) up to the forks in use.

What runs in parallel today: Ansible runs every host at once up to `forks`
(provisioner sets forks = min(hosts, {forks})), each host's files in one transfer and one
module call; host facts are read over one SSH agent per host, up to 8 hosts at once;
ACME orders run in up to {orders} threads; DNS is one signed update message per zone
(one message holds ~300 agencies' records); verification is asyncio, 32 sites at
once. Forks are the lever for many hosts: above {forks} hosts Ansible goes in waves,
and the per-host cost only stays flat while the controller has CPU for the forks.

What runs out first. For one regency: nothing (seconds, one certificate per agency,
well inside every limit). For a province or the whole country run centrally: Let's
Encrypt, long before the controller. New orders are {orders_per_3h} per account per 3
hours (token bucket: a burst of {orders_per_3h}, then one per 36 s), so 400 orders on one account wait
about an hour for the last 100, and 22,000 orders take days. One account per regency
avoids that, but new accounts are {registrations} per IPv4 address per 3 hours.
Certificates per registered domain are {per_domain} per week; go.id is a public suffix, so
the registered domain is the regency's (paserkab.go.id): a 40-agency regency fits, a
regency of more than {per_domain} agencies needs a second week, and a province that puts all its agencies under one
domain would need weeks. Wildcard mode (dns-01-wildcard: one *.zone certificate per
host) avoids all three. Renewals are designed by Let's Encrypt to almost never hit a
limit. After Let's Encrypt: the controller's {cores} cores (CPU floor column), then
memory for many forks; SSH connections are two per host (the agent and Ansible's
ControlPersist master), well inside sshd's defaults on each host. On a real network
every SSH, ACME and DNS round trip adds latency that the lab (loopback) does not have:
parallel work hides most of it, the two Ansible runs per onboarding do not."""


# =========================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=labkit.BENCH_NET,
                        help="three octets inside 127.0.0.0/8 for the lab's addresses")
    parser.add_argument("--offset", type=int, default=150,
                        help="added to the sample's last octets (keeps clear of other labs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agencies", type=int, default=40)
    parser.add_argument("--hosts", type=int, default=4,
                        help="web hosts of the widest spread of the agencies (2 to 10): the "
                             "per-host cost is fitted over 1, 2 and this many hosts")
    parser.add_argument("--write-results", action="store_true",
                        help="rewrite the Onboarding section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.agencies < 4 or args.rounds < 1 or not 2 <= args.hosts <= labkit.MAX_WEB_HOSTS:
        parser.error(f"--agencies >= 4, --rounds >= 1, --hosts 2 to {labkit.MAX_WEB_HOSTS}")
    cases = make_cases(args.agencies, args.hosts)
    load_before = labkit.load_average()
    with labkit.scratch_dir("onboard-bench-") as root:
        bench = build_bench(root, labkit.check_prefix(args.prefix), args.offset, cases)
        try:
            with labkit.running_lab(bench.lab):
                series = run_rounds(bench, cases, args.agencies, args.rounds)
        except BenchError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
    text = report(series, args.agencies, args.rounds, args.prefix,
                  (load_before, labkit.load_average()))
    print("\n" + text)
    found = goals(series, args.agencies)
    for goal in found:
        print(f"{goal.verdict}: {goal.name}: {goal.measured:.2f}x (target <= {goal.limit}x)")
    if args.write_results:
        labkit.write_section(SECTION, text)
    return 0 if all(g.passed for g in found) else 1


if __name__ == "__main__":
    sys.exit(main())
