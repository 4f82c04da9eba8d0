"""The plan -> confirm -> apply -> emit sequence onboard, renew, offboard and restore share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import typer
from typer.testing import CliRunner

from provisioner.cli.common import PlannedChange, handles_errors
from provisioner.cli.options import DRY_RUN_OPTION, FORMAT_OPTION, YES_OPTION, Format


@dataclass
class FakePlan:
    changes: list[str]

    def to_dict(self) -> dict:
        return {"changes": self.changes}


@dataclass
class FakeResult:
    failed: bool

    def to_dict(self) -> dict:
        return {"failed": self.failed}


@dataclass
class Runs:
    applied: list[FakePlan] = field(default_factory=list)


def planned_app(plan: FakePlan, *, fail: bool = False, plan_in_json: bool = True,
                runs: Runs | None = None) -> typer.Typer:
    """One command that changes things the way onboard and offboard do, with a fake plan."""
    app = typer.Typer()
    runs = runs if runs is not None else Runs()

    @app.command()
    @handles_errors
    def change(yes: bool = YES_OPTION, dry_run: bool = DRY_RUN_OPTION,
               fmt: Format = FORMAT_OPTION) -> None:
        change = PlannedChange(fmt, dry_run=dry_run, yes=yes)
        change.report("planning")
        if not change.go_ahead(plan, lambda p: typer.echo(f"plan: {p.changes}"),
                               question="Apply?" if plan.changes else None,
                               nothing_to_do=None if plan.changes else "nothing to do"):
            return
        runs.applied.append(plan)
        change.finish(FakeResult(fail), lambda r: typer.echo(f"result: failed={r.failed}"),
                      plan_in_json=plan_in_json)

    return app


def invoke(app: typer.Typer, *args: str, answer: str = ""):
    return CliRunner().invoke(app, list(args), input=answer)


def test_the_plan_is_shown_and_applied_after_a_yes():
    runs = Runs()
    result = invoke(planned_app(FakePlan(["a"]), runs=runs), answer="y\n")
    assert result.exit_code == 0
    assert "plan: ['a']" in result.stdout and "result: failed=False" in result.stdout
    assert "planning" in result.stderr and len(runs.applied) == 1


def test_a_no_changes_nothing_and_exits_1():
    runs = Runs()
    result = invoke(planned_app(FakePlan(["a"]), runs=runs), answer="n\n")
    assert result.exit_code == 1 and not runs.applied
    assert "aborted: nothing was changed" in result.stderr


def test_yes_applies_without_asking():
    runs = Runs()
    result = invoke(planned_app(FakePlan(["a"]), runs=runs), "--yes")
    assert result.exit_code == 0 and len(runs.applied) == 1
    assert "Apply?" not in result.stdout


def test_a_dry_run_shows_the_plan_and_applies_nothing():
    runs = Runs()
    result = invoke(planned_app(FakePlan(["a"]), runs=runs), "--dry-run")
    assert result.exit_code == 0 and not runs.applied
    assert "plan: ['a']" in result.stdout and "result:" not in result.stdout


def test_nothing_to_do_is_said_and_nothing_applied():
    runs = Runs()
    result = invoke(planned_app(FakePlan([]), runs=runs), "--yes")
    assert result.exit_code == 0 and not runs.applied
    assert "nothing to do" in result.stdout


def test_json_cannot_ask_for_confirmation():
    runs = Runs()
    result = invoke(planned_app(FakePlan(["a"]), runs=runs), "--format", "json")
    assert result.exit_code == 2 and not runs.applied
    assert "--format json cannot ask for confirmation" in result.stderr
    assert "add --yes or --dry-run" in result.stderr


def test_json_of_a_dry_run_is_the_plan_with_a_null_result():
    result = invoke(planned_app(FakePlan(["a"])), "--dry-run", "--format", "json")
    assert result.exit_code == 0 and "planning" not in result.stderr
    assert json.loads(result.stdout) == {"plan": {"changes": ["a"]}, "result": None}


@pytest.mark.parametrize("plan_in_json, expected", [
    (True, {"plan": {"changes": ["a"]}, "result": {"failed": True}}),
    (False, {"failed": True}),
])
def test_json_of_an_applied_run_and_exit_1_when_it_failed(plan_in_json, expected):
    result = invoke(planned_app(FakePlan(["a"]), fail=True, plan_in_json=plan_in_json),
                    "--yes", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == expected


@pytest.mark.parametrize("command", [["onboard", "dinkes"], ["offboard", "dinkes"],
                                     ["restore", "archive.tar.gz"]])
def test_the_commands_refuse_json_without_yes_before_touching_anything(sample, command):
    result = sample.cli(*command, "--format", "json")
    assert result.exit_code == 2 and result.exception is None
    assert "--format json cannot ask for confirmation" in result.stderr
