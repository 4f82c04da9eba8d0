"""Helpers for unit tests: a private copy of the sample inventory and an in-process CLI."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli import app

SAMPLE = Path(__file__).resolve().parents[2] / "inventory"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def run_cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return Result(result.exit_code, result.stdout, result.stderr, exc)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: compared before/after to prove nothing changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class SampleInventory:
    root: Path
    state_dir: Path

    def agency_path(self, slug: str) -> Path:
        return self.root / "agencies" / f"{slug}.yml"

    def read(self, rel: str) -> dict:
        return yaml.safe_load((self.root / rel).read_text(encoding="utf-8"))

    def write(self, rel: str, data: object) -> Path:
        path = self.root / rel
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    def cli(self, *args: str) -> Result:
        return run_cli("--inventory", str(self.root), "--state-dir", str(self.state_dir), *args)

    def assert_one_settings_error(self, field: str, words: str, secret: str) -> None:
        """``registry check`` refuses group_vars/all.yml in one line naming the file, its
        line and ``field``, exit 2, never shows ``secret`` and changes nothing."""
        before = tree_digest(self.root)
        result = self.cli("registry", "check")
        assert result.exit_code == 2 and result.exception is None
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert re.match(rf"error: \S*group_vars/all\.yml:\d+: {re.escape(field)}: .*"
                        rf"{re.escape(words)}", lines[0]), lines[0]
        assert secret not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr and tree_digest(self.root) == before


@pytest.fixture
def sample(tmp_path: Path) -> SampleInventory:
    """A copy of the sample inventory with three agencies, in a tmp dir."""
    root = tmp_path / "inventory"
    (root / "agencies").mkdir(parents=True)
    shutil.copytree(SAMPLE / "group_vars", root / "group_vars")
    shutil.copy(SAMPLE / "hosts.yml", root / "hosts.yml")
    for slug in ("dinkes", "disdukcapil", "dkisp"):
        shutil.copy(SAMPLE / "agencies" / f"{slug}.yml", root / "agencies" / f"{slug}.yml")
    return SampleInventory(root=root, state_dir=tmp_path / "state")
