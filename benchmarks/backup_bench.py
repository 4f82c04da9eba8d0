"""Benchmark: backing up a regency's sites with restic, and restoring one, on the lab.

Brings up a private lab (real BIND, OpenSSH + nginx web hosts, Pebble) on
PREFIX.(X+offset), onboards N agencies (``bench-01``..; spread over web1 and web2),
gives each site the uploads of an agency that has been live for a while (FILES files
of SIZE random bytes each, so restic cannot compress them away), then runs as child
processes under ``/usr/bin/time -v``:

1. ``provisioner backup --all``: the first backup (the repository is created);
2. one page of one agency edited, then ``provisioner backup --all`` again: the
   incremental run (every site's hashes compared, one new snapshot);
3. the edited agency's site folder deleted on its host, then
   ``provisioner restore bench-01 --from-backup latest --yes``: a full restore (files
   back byte for byte, checked by hash and mode, then onboarding).

Goal (PASS/MISS printed, exit 1 on a miss): the incremental run <= 0.2x the first.

    .venv/bin/python benchmarks/backup_bench.py [--prefix 127.0.12] [--offset 0]
        [--agencies 40] [--files 5] [--size 102400] [--write-results]

--write-results rewrites the "backup_bench" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import labkit
from labkit import TimedRun, markdown_table

from provisioner.lab.control import Lab
from provisioner.registry.load import load_inventory
from provisioner.site import render as site  # labkit has put the repository on sys.path

SECTION = "backup_bench"
INCREMENTAL_GOAL = 0.2  # the incremental run <= 0.2x the first


class BenchError(Exception):
    """A run that did not do what the benchmark measures."""


def slugs(count: int) -> list[str]:
    return [f"bench-{i:02d}" for i in range(1, count + 1)]


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mode & 0o7777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Bench:
    def __init__(self, root: Path, prefix: str, offset: int, agencies: int):
        spread = {s: f"web{i % 2 + 1}" for i, s in enumerate(slugs(agencies))}
        self.inventory_dir = labkit.make_inventory(root / "inventory", prefix, offset, spread)
        self.state_dir = root / "state"
        self.lab = Lab(load_inventory(self.inventory_dir, self.state_dir))

    def run(self, *args: str, what: str) -> tuple[TimedRun, dict[str, Any]]:
        argv = [*labkit.PROVISIONER, "--inventory", str(self.inventory_dir), "--state-dir",
                str(self.state_dir), *args, "--format", "json"]
        done = labkit.timed_run(argv, timeout=3600)
        if done.returncode != 0:
            raise BenchError(f"{what}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
        return done, json.loads(done.stdout)

    def site_dir(self, slug: str) -> Path:
        inventory = load_inventory(self.inventory_dir, self.state_dir)
        agency = inventory.agencies[slug]
        host = inventory.hosts[agency.host]
        return self.lab.local(host, site.site_dir(agency, host))

    def upload(self, slug: str, files: int, size: int) -> None:
        """What an agency adds after going live: documents and pictures."""
        folder = self.site_dir(slug) / "berkas"
        folder.mkdir(mode=0o755, exist_ok=True)
        for i in range(files):
            (folder / f"dokumen-{i + 1}.bin").write_bytes(os.urandom(size))


def measure(bench: Bench, agencies: int, files: int, size: int) -> dict[str, Any]:
    first_slug = slugs(agencies)[0]
    bench.run("onboard", "--all", "--yes", what="onboard")
    for slug in slugs(agencies):
        bench.upload(slug, files, size)
    content = sum(tree_bytes(bench.site_dir(s)) for s in slugs(agencies))

    first, first_out = bench.run("backup", "--all", what="first backup")
    repository = load_inventory(bench.inventory_dir, bench.state_dir).settings.backup.repository
    repo_first = tree_bytes(repository)

    page = bench.site_dir(first_slug) / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace(
        "</main>", "<p>Pengumuman baru</p></main>"), encoding="utf-8")
    incremental, inc_out = bench.run("backup", "--all", what="incremental backup")
    new = [o["target"] for o in inc_out["outcomes"] if o["status"] == "changed"]
    if sorted(new) != sorted([first_slug, "state"]):
        raise BenchError(f"incremental run: new snapshots of {new}, expected {first_slug}")
    repo_second = tree_bytes(repository)

    site_dir = bench.site_dir(first_slug)
    before = file_states(site_dir)
    shutil.rmtree(site_dir)
    restore, _out = bench.run("restore", first_slug, "--from-backup", "latest", "--yes",
                              what="restore")
    if file_states(site_dir) != before:
        raise BenchError("restore: the site differs from what was backed up")
    summary = next(o["summary"] for o in inc_out["outcomes"] if o["target"] == first_slug)
    return {"agencies": agencies, "content": content, "first": first,
            "incremental": incremental, "restore": restore, "repo_first": repo_first,
            "repo_second": repo_second, "site_files": len(before),
            "site_bytes": tree_bytes(site_dir), "inc_added": summary["data_added"],
            "first_snapshots": sum(1 for o in first_out["outcomes"] if o["status"] == "changed")}


def report(m: dict[str, Any], prefix: str, loads: tuple[str, str]) -> str:
    ratio = m["incremental"].wall / m["first"].wall
    verdict = "PASS" if ratio <= INCREMENTAL_GOAL else "MISS"
    mb = 1024 * 1024
    rows = [
        [f"first backup, {m['agencies']} agencies ({m['content'] / mb:.1f} MiB of site content)",
         f"{m['first'].wall:.1f}", f"{m['first'].cpu:.1f}", f"{m['first'].max_rss_mb:.0f}",
         f"repository {m['repo_first'] / mb:.1f} MiB, {m['first_snapshots']} snapshots"],
        ["incremental: one page changed", f"{m['incremental'].wall:.1f}",
         f"{m['incremental'].cpu:.1f}", f"{m['incremental'].max_rss_mb:.0f}",
         f"1 site + state re-snapshotted (restic: {m['inc_added'] / 1024:.0f} KiB added for "
         f"the site); retention pruned today's earlier two: repository "
         f"{(m['repo_second'] - m['repo_first']) / 1024:+.0f} KiB"],
        [f"full restore of one agency ({m['site_files']} files, {m['site_bytes'] / 1024:.0f} KiB)",
         f"{m['restore'].wall:.1f}", f"{m['restore'].cpu:.1f}", f"{m['restore'].max_rss_mb:.0f}",
         "restic restore + files written back + onboarding (DNS, vhost, certificate: still "
         "installed, kept; verification); every file's hash and mode checked"],
    ]
    table = markdown_table(["run", "wall s", "CPU s", "max RSS MB", "notes"], rows)
    return "\n".join([
        "## Backup (restic)",
        "",
        f"`benchmarks/backup_bench.py` on the lab ({prefix}.x, web1 + web2, restic from Debian). "
        f"{labkit.machine_line()}; load average before {loads[0]}, after {loads[1]}.",
        "",
        table,
        "",
        f"{verdict}: incremental run {ratio:.2f}x the first (target <= {INCREMENTAL_GOAL}x). "
        "An unchanged site costs one SSH round trip for its hashes and no restic run; the "
        "changed one is fetched whole (the host agent sends a site in one piece) and restic "
        "stores only its changed chunks.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default=labkit.BENCH_NET)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--agencies", type=int, default=40)
    parser.add_argument("--files", type=int, default=5, help="uploads per site")
    parser.add_argument("--size", type=int, default=102400, help="bytes per upload")
    parser.add_argument("--write-results", action="store_true",
                        help="rewrite the backup_bench section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.agencies < 2 or args.files < 0 or args.size < 0:
        parser.error("--agencies >= 2, --files and --size >= 0")
    load_before = labkit.load_average()
    with labkit.scratch_dir("backup-bench-") as root:
        bench = Bench(root, labkit.check_prefix(args.prefix), args.offset, args.agencies)
        try:
            with labkit.running_lab(bench.lab):
                measured = measure(bench, args.agencies, args.files, args.size)
        except BenchError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
    text = report(measured, args.prefix, (load_before, labkit.load_average()))
    print("\n" + text)
    if args.write_results:
        labkit.write_section(SECTION, text)
    return 0 if measured["incremental"].wall / measured["first"].wall <= INCREMENTAL_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
