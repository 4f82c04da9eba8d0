"""Run every benchmark in turn and write benchmarks/RESULTS.md (``make bench``).

Each benchmark brings up its own lab on the benchmarks' prefix (default 127.0.12,
clear of a lab run by hand on 127.0.0 and of the test suite on 127.0.1; each script
keeps its own last-octet offset) and brings it down at the end, even on failure.
Benchmarks that write their own RESULTS.md section get ``--write-results``; the
output of the others is turned into a section here (their aligned table becomes a
markdown table). The top section describes the machine and lists every benchmark
with its exit code: a benchmark that misses a goal exits 1, and so does this run,
after all of them ran.

    .venv/bin/python benchmarks/run.py [--prefix 127.0.12] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import labkit

HERE = Path(__file__).resolve().parent
TABLE_ROW = re.compile(r"^(\s*\S.*?)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$")


@dataclass(frozen=True)
class Benchmark:
    name: str  # script name without .py, also its RESULTS.md section
    title: str
    writes_results: bool  # takes --write-results and writes its own section

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


BENCHMARKS = (
    Benchmark("dns_batch", "DNS: 40 agencies in one signed update", False),
    Benchmark("ansible_floor", "Ansible: start-up floor, 40 agencies vs 1", False),
    Benchmark("sweep_bench", "Sweep (issue 15)", True),
    Benchmark("onboard_bench", "Onboarding (issue 9)", True),
    Benchmark("verdict_bench", "Time to verdict (issue 15)", True),
    Benchmark("backup_bench", "Backup with restic (issue 17)", True),
)


@dataclass(frozen=True)
class Outcome:
    benchmark: Benchmark
    returncode: int
    seconds: float
    output: str
    load: tuple[str, str]  # load average before and after


def run(benchmark: Benchmark, prefix: str) -> Outcome:
    """Run one benchmark script, its output shown live and kept."""
    argv = [sys.executable, str(benchmark.script), "--prefix", prefix]
    if benchmark.writes_results:
        argv.append("--write-results")
    print(f"\n=== {benchmark.name}: {' '.join(argv[1:])}", flush=True)
    started, load_before = time.perf_counter(), labkit.load_average()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    process.wait()
    return Outcome(benchmark, process.returncode, time.perf_counter() - started, "".join(lines),
                   (load_before, labkit.load_average()))


def output_as_markdown(output: str) -> str:
    """Aligned "measure median min max" tables become markdown tables; other lines stay."""
    lines, header, rows, out = output.rstrip().splitlines(), None, [], []

    def flush() -> None:
        if header and rows:
            out.extend([labkit.markdown_table(header, rows), ""])
        rows.clear()

    for line in lines:
        match = TABLE_ROW.match(line) if header else None
        if match:
            rows.append([match.group(1).strip(), *match.groups()[1:]])
            continue
        flush()
        if line.split()[:1] == ["measure"]:
            header = line.split()
            out.append("")
        else:
            header = None
            out.append(line)
    flush()
    return "\n".join(out)


def section(outcome: Outcome) -> str:
    b = outcome.benchmark
    status = "" if outcome.returncode == 0 else \
        f"\n\n**Exit code {outcome.returncode}: goals missed or the run failed.**"
    return (f"## {b.title}\n\n{labkit.machine_line()}; load average {outcome.load[0]} before, "
            f"{outcome.load[1]} after. `benchmarks/{b.name}.py` ({outcome.seconds:.0f} s)."
            f"\n\n{output_as_markdown(outcome.output)}{status}")


def summary(outcomes: list[Outcome], prefix: str) -> str:
    rows = [[f"`{o.benchmark.name}.py`", o.benchmark.title, o.returncode, f"{o.seconds:.0f}",
             o.load[0], o.load[1]] for o in outcomes]
    return "\n".join([
        "Written by `make bench` (`benchmarks/run.py`); see benchmarks/README.md for what each "
        "benchmark measures and how to read it. Numbers are from one machine and one run; "
        "compare ratios within a run, not absolute times across machines.",
        "",
        labkit.markdown_table(["machine", ""], list(labkit.machine().items()), align="ll"),
        "",
        f"Last run of `benchmarks/run.py`: labs on {prefix}.x. The load average (1, 5, 15 "
        f"min; {labkit.machine()['cores']} cores) shows other work on the machine, which is "
        f"noise in wall times.",
        "",
        labkit.markdown_table(["benchmark", "section", "exit code", "seconds",
                               "load before", "load after"], rows, align="llrrll"),
    ])


def main() -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=labkit.BENCH_NET,
                        help="three octets inside 127.0.0.0/8 for the benchmarks' labs")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"run only these ({', '.join(names)})")
    args = parser.parse_args()
    labkit.check_prefix(args.prefix)
    outcomes = []
    for benchmark in (b for b in BENCHMARKS if not args.only or b.name in args.only):
        outcome = run(benchmark, args.prefix)
        outcomes.append(outcome)
        if not benchmark.writes_results:
            labkit.write_section(benchmark.name, section(outcome))
    labkit.write_section("run", summary(outcomes, args.prefix), first=True)
    failed = [o.benchmark.name for o in outcomes if o.returncode != 0]
    print(f"\nbenchmarks: {len(outcomes) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "") + f"; results in {labkit.RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
