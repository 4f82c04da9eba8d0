"""Shared helpers of the benchmarks: a lab on a private prefix, timed CLI runs, RESULTS.md.

Benchmarks do not import from tests/: this is the small part of the test helpers
they need (the sample inventory moved to another loopback prefix), plus what only
benchmarks need (the machine's description, ``/usr/bin/time -v``, result sections).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_INVENTORY = ROOT / "inventory"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BENCH_NET = "127.0.12"  # benchmarks' own prefix: clear of 127.0.0 (by hand) and 127.0.1 (tests)
PROVISIONER = [sys.executable, "-m", "provisioner"]
TIME_BINARY = "/usr/bin/time"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_WEB_HOSTS = 10  # web1..web10 on the sample's .20-.29 (acme is .30)
_SAMPLE_ADDRESS = re.compile(r"\b127\.0\.0\.(\d{1,3})\b")

sys.path.insert(0, str(ROOT))
from provisioner.lab.control import Lab  # noqa: E402

# =========================================================================== inventory + lab

def check_prefix(prefix: str) -> str:
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", prefix) or \
            any(int(part) > 255 for part in prefix.split(".")):
        raise SystemExit(f"--prefix {prefix!r}: expected three octets inside 127.0.0.0/8, "
                         f"e.g. {BENCH_NET}")
    return prefix


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """Parsed YAML with ``change`` applied to every string in it."""
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    return change(value) if isinstance(value, str) else value


def _mover(prefix: str, offset: int) -> Callable[[str], str]:
    """Every sample address 127.0.0.X in a string replaced by PREFIX.(X+offset)."""
    def swap(match: re.Match) -> str:
        last = int(match.group(1)) + offset
        if last > 254:
            raise SystemExit(f"address {match.group(0)} + offset {offset} leaves the /24")
        return f"{prefix}.{last}"
    return lambda text: _SAMPLE_ADDRESS.sub(swap, text)


def _add_web_hosts(hosts_yml: dict[str, Any], count: int) -> None:
    """web3..web<count>, each a copy of the sample's web2 on the next address (.22, .23, ..)."""
    hosts = hosts_yml["all"]["children"]["webservers"]["hosts"]
    if not 2 <= count <= MAX_WEB_HOSTS:
        raise SystemExit(f"web hosts: 2 to {MAX_WEB_HOSTS} (the sample's 127.0.0.20-29)")
    for n in range(3, count + 1):
        hosts[f"web{n}"] = _map_strings(hosts["web2"], lambda text, n=n: text.replace(
            "web2", f"web{n}").replace("127.0.0.21", f"127.0.0.{19 + n}"))


def sample_agency_templates() -> list[dict[str, Any]]:
    """The sample's hosted agencies as parsed YAML, in file order."""
    agencies = [yaml.safe_load(p.read_text())
                for p in sorted((SAMPLE_INVENTORY / "agencies").glob("*.yml"))]
    return [a for a in agencies if a.get("host") and not a.get("external_url")]


def bench_agency(template: Mapping[str, Any], slug: str, host: str) -> dict[str, Any]:
    """A valid agency file from a sample agency: new slug (= subdomain) and host."""
    data = {k: v for k, v in template.items() if k not in ("subdomain", "external_url")}
    return {**data, "slug": slug, "host": host, "name": f"{template['name']} ({slug})"}


def make_inventory(dest: Path, prefix: str, offset: int, hosts_of: Mapping[str, str],
                   web_hosts: int = 2) -> Path:
    """The sample's settings and ``web_hosts`` web hosts on PREFIX.(X+offset), with
    agencies ``slug -> host`` generated from the sample agencies in turn."""
    for rel in ("hosts.yml", "group_vars/all.yml"):
        data = yaml.safe_load((SAMPLE_INVENTORY / rel).read_text())
        if rel == "hosts.yml":
            _add_web_hosts(data, web_hosts)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(_map_strings(data, _mover(prefix, offset)),
                                         sort_keys=False, allow_unicode=True))
    agencies_dir = dest / "agencies"
    agencies_dir.mkdir(parents=True, exist_ok=True)
    templates = sample_agency_templates()
    for i, (slug, host) in enumerate(hosts_of.items()):
        data = bench_agency(templates[i % len(templates)], slug, host)
        (agencies_dir / f"{slug}.yml").write_text(
            yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return dest


@contextlib.contextmanager
def running_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, up for the block and down afterwards, even on failure."""
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        yield Path(tmp)


# =========================================================================== timed runs

@dataclass(frozen=True)
class TimedRun:
    """One child process: wall time, CPU, peak memory, exit code and output."""

    wall: float  # seconds
    cpu: float  # user + system seconds of the process and its waited-for children
    max_rss_mb: float  # largest single process (/usr/bin/time -v)
    tree_rss_mb: float  # largest sum over the process tree (sampled; shared pages count twice)
    returncode: int
    stdout: str
    stderr: str


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, summed (from /proc/*/statm)."""
    children, total, todo = _children_of(), 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


class TreeMemorySampler(threading.Thread):
    """Samples the process tree's summed RSS every ``interval`` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))


def _time_field(report: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}: (\S+)$", report, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/usr/bin/time -v printed no {label!r}")
    return float(match.group(1))


def timed_run(argv: list[str], timeout: float = 900) -> TimedRun:
    """Run ``argv`` under ``/usr/bin/time -v`` (start-up included, as an operator sees it)."""
    if not Path(TIME_BINARY).exists():
        raise SystemExit(f"{TIME_BINARY} is missing: apt-get install time (make setup does)")
    with tempfile.NamedTemporaryFile("r", prefix="time-", suffix=".txt") as report:
        started = time.perf_counter()
        process = subprocess.Popen([TIME_BINARY, "-v", "-o", report.name, *argv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            sampler.done.set()
            sampler.join()
        wall = time.perf_counter() - started
        text = report.read()
    cpu = _time_field(text, "User time (seconds)") + _time_field(text, "System time (seconds)")
    rss_kb = _time_field(text, "Maximum resident set size (kbytes)")
    return TimedRun(wall, cpu, rss_kb / 1024, sampler.peak / 2**20, process.returncode,
                    stdout, stderr)


# =========================================================================== machine + results

def _package_version(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "not installed"


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": dt.date.today().isoformat(),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "ansible-core": metadata.version("ansible-core"),
        "nginx": _package_version("nginx"),
        "BIND": _package_version("bind9"),
        "Pebble": _package_version("pebble"),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine is noise in wall times."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_line() -> str:
    m = machine()
    return (f"{m['date']}, {m['CPU']}, {m['cores']} cores, {m['memory']}, {m['kernel']}, "
            f"Python {m['Python']}, ansible-core {m['ansible-core']}, nginx {m['nginx']}, "
            f"BIND {m['BIND']}, Pebble {m['Pebble']}")


def markdown_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """``align``: one character per column, "l" or "r" (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, text: str, results: Path = RESULTS, first: bool = False) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->``;
    a new one goes to the end (``first``: right under the title)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    block = f"{start}\n{text.strip()}\n{end}"
    if start in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1]
    elif first:
        title, _, rest = current.partition("\n")
        current = f"{title}\n\n{block}\n\n{rest.lstrip()}".rstrip("\n") + "\n"
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    results.write_text(current)
