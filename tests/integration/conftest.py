"""The integration-test lab: real servers on a private loopback prefix.

Several people run integration tests on one machine at once, so every test
session gets its own lab on the addresses of ``PROVISIONER_TEST_NET`` (default
``127.0.1``; the sample's 127.0.0.X become PREFIX.X) with its state in a tmp dir.

Fixtures for every integration test:

* ``lab`` (session): a ``TestLab`` that is up for the whole session and brought
  down at the end, even on failure. Attributes: ``inventory_dir``, ``state_dir``,
  ``inventory`` (loaded ``Inventory``), ``lab`` (``provisioner.lab.control.Lab``),
  ``prefix``, ``up_report``.
* ``cli`` (session): ``cli(*args, subprocess=False) -> CliResult(exit_code,
  stdout, stderr)`` runs ``provisioner --inventory ... --state-dir ... ARGS``
  against that lab, in-process (typer's CliRunner) or as a real subprocess.

Helpers: ``make_test_inventory(dest, prefix, offset=0)`` and ``run_cli(inventory_dir,
state_dir, *args)`` for tests that need a lab of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess as sp
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.errors import LabError
from provisioner.lab.control import Lab, UpReport
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Inventory

SAMPLE_INVENTORY = Path(__file__).resolve().parents[2] / "inventory"
TEST_NET = os.environ.get("PROVISIONER_TEST_NET", "127.0.1")
_SAMPLE_ADDRESS = re.compile(r"\b127\.0\.0\.(\d{1,3})\b")


def _check_prefix(prefix: str) -> str:
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", prefix) or \
            any(int(part) > 255 for part in prefix.split(".")):
        raise pytest.UsageError(f"PROVISIONER_TEST_NET={prefix!r}: expected three octets "
                                "inside 127.0.0.0/8, e.g. 127.0.7")
    return prefix


def rewrite_addresses(value: Any, prefix: str, offset: int = 0) -> Any:
    """Replace every sample address 127.0.0.X in parsed YAML by PREFIX.(X+offset)."""
    if isinstance(value, dict):
        return {k: rewrite_addresses(v, prefix, offset) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_addresses(v, prefix, offset) for v in value]
    if isinstance(value, str):
        def swap(match: re.Match) -> str:
            last = int(match.group(1)) + offset
            if last > 254:
                raise ValueError(f"address {match.group(0)} + offset {offset} leaves the /24")
            return f"{prefix}.{last}"
        return _SAMPLE_ADDRESS.sub(swap, value)
    return value


def make_test_inventory(dest: Path, prefix: str = TEST_NET, offset: int = 0,
                        agencies: bool = True) -> Path:
    """Copy the sample inventory to ``dest`` with its addresses moved to ``prefix``.

    ``offset`` shifts the last octet (a second lab in the same prefix uses 100).
    Agency files are copied unchanged (they name hosts, not addresses).
    """
    _check_prefix(prefix)
    dest = Path(dest)
    for rel in ("hosts.yml", "group_vars/all.yml"):
        data = yaml.safe_load((SAMPLE_INVENTORY / rel).read_text())
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(rewrite_addresses(data, prefix, offset),
                                         sort_keys=False, allow_unicode=True))
    (dest / "agencies").mkdir(parents=True, exist_ok=True)
    if agencies:
        for path in sorted((SAMPLE_INVENTORY / "agencies").glob("*.yml")):
            shutil.copy(path, dest / "agencies" / path.name)
    return dest


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(inventory_dir: Path, state_dir: Path, *args: str,
            subprocess: bool = False, timeout: float = 300) -> CliResult:
    """``provisioner --inventory I --state-dir S ARGS`` in-process or as a subprocess."""
    argv = ["--inventory", str(inventory_dir), "--state-dir", str(state_dir), *map(str, args)]
    if subprocess:
        done = sp.run([sys.executable, "-m", "provisioner", *argv], capture_output=True,
                      text=True, timeout=timeout)
        return CliResult(done.returncode, done.stdout, done.stderr)
    result = CliRunner().invoke(app, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


@dataclass
class TestLab:
    __test__ = False  # not a test class, despite the name

    inventory_dir: Path
    state_dir: Path
    inventory: Inventory
    lab: Lab
    prefix: str
    up_report: UpReport


def start_test_lab(root: Path, prefix: str = TEST_NET, offset: int = 0) -> TestLab:
    """Build a test inventory under ``root`` and bring its lab up (down again on failure)."""
    inventory_dir = make_test_inventory(root / "inventory", prefix, offset)
    state_dir = root / "state"
    inventory = load_inventory(inventory_dir, state_dir)
    lab = Lab(inventory)
    try:
        report = lab.up()
    except BaseException:
        lab.down()
        raise
    return TestLab(inventory_dir, state_dir, inventory, lab, prefix, report)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestLab]:
    root = tmp_path_factory.mktemp("lab")
    try:
        test_lab = start_test_lab(root, _check_prefix(TEST_NET))
    except LabError as exc:
        pytest.fail(f"lab up failed: {exc}", pytrace=False)
    try:
        yield test_lab
    finally:
        test_lab.lab.down()


@pytest.fixture(scope="session")
def cli(lab: TestLab):
    def invoke(*args: str, subprocess: bool = False) -> CliResult:
        return run_cli(lab.inventory_dir, lab.state_dir, *args, subprocess=subprocess)

    return invoke
