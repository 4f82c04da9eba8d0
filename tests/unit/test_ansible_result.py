"""ansible-runner events -> data (provisioner/hosts/ansible_events.py, deploy.py): pure,
table-driven.

The event shapes are those ansible-runner 2.4 / ansible-core 2.19 emit (recorded
from runs against the lab, trimmed to the fields that matter).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.hosts.ansible_events import (
    HostStats,
    Progress,
    failure_message,
    parse_events,
    progress_of,
)
from provisioner.hosts.deploy import SiteBundle, deploy_outcomes

APPLY = "Apply site files and vhosts (nginx -t, swap, one reload)"
PING = "Ping"


def event(kind: str, host: str | None = None, task: str = APPLY,
          action: str = "provisioner_vhosts", res: dict | None = None, **extra) -> dict:
    data = {"task": task, "task_action": action, **extra}
    if host:
        data["host"] = host
    if res is not None:
        data["res"] = res
    return {"event": kind, "event_data": data}


def stats(**counters: dict) -> dict:
    base = {"ok": {}, "changed": {}, "failures": {}, "dark": {}, "skipped": {}}
    return {"event": "playbook_on_stats", "event_data": {**base, **counters}}


def agency(status: str, vhost: str = "created", reason: str | None = None, **files) -> dict:
    return {"status": status, "reason": reason, "vhost": vhost, "rejected_file": None,
            "files": {"created": [], "updated": [], "removed": [], "kept_edited": [],
                      "unchanged": 0, **files}}


UNREACHABLE_MSG = ('Task failed: Data could not be sent to remote host "127.0.8.120". Make sure '
                   'this host can be reached over ssh: No ED25519 host key is known for '
                   '127.0.8.120 and you have requested strict checking.\r\nHost key '
                   'verification failed.')


# --------------------------------------------------------------------------- progress

@pytest.mark.parametrize("ev,expected", [
    (event("runner_on_start", "web1"), Progress("web1", APPLY, "started")),
    (event("runner_on_ok", "web1", res={"changed": False}), Progress("web1", APPLY, "ok")),
    (event("runner_on_ok", "web1", res={"changed": True}), Progress("web1", APPLY, "changed")),
    (event("runner_on_failed", "web2", res={"msg": "x"}), Progress("web2", APPLY, "failed")),
    (event("runner_on_failed", "web2", res={"msg": "x"}, ignore_errors=True),
     Progress("web2", APPLY, "ok")),
    (event("runner_on_unreachable", "web2", res={"unreachable": True}),
     Progress("web2", APPLY, "unreachable")),
    (event("runner_on_skipped", "web1"), Progress("web1", APPLY, "skipped")),
    (event("playbook_on_task_start"), None),
    (stats(), None),
    ({"event": "verbose", "stdout": "PLAY [x]"}, None),
])
def test_progress_steps(ev, expected):
    assert progress_of(ev) == expected


# --------------------------------------------------------------------------- messages

@pytest.mark.parametrize("res,expected", [
    ({"msg": "failed: c (the other agencies were applied)"},
     "failed: c (the other agencies were applied)"),
    ({"msg": UNREACHABLE_MSG}, UNREACHABLE_MSG.replace("\r\n", " ")),
    ({"msg": "MODULE FAILURE\nSee stdout/stderr for the exact error",
      "module_stderr": "Traceback (most recent call last):\n  ...\nPermissionError: [Errno 13] x\n"},
     "module crashed: PermissionError: [Errno 13] x"),
    ({"msg": "", "stderr": "nginx: [emerg] unknown directive"}, "nginx: [emerg] unknown directive"),
    ({}, "failed without a message"),
])
def test_failure_messages(res, expected):
    assert failure_message(res) == expected


# --------------------------------------------------------------------------- whole runs

MODULE_OK = {"changed": True, "reloaded": True, "nginx_tests": 1,
             "agencies": {"dinkes": agency("changed", created=["index.html"])}}

RUNS = {
    "success": (
        [event("runner_on_ok", "web1", PING, "ansible.builtin.ping", {"changed": False}),
         event("runner_on_ok", "web1", res=MODULE_OK),
         stats(ok={"web1": 2}, changed={"web1": 1})],
        "successful", 0,
        {"web1": HostStats(ok=2, changed=1)}, [], 2),
    "unreachable": (
        [event("runner_on_unreachable", "web2",
               res={"unreachable": True, "msg": UNREACHABLE_MSG, "changed": False}),
         stats(dark={"web2": 1})],
        "failed", 4,
        {"web2": HostStats(unreachable=1)},
        [("web2", APPLY, True)], 1),
    "module reports a rejected vhost": (
        [event("runner_on_failed", "web1", res={"msg": "failed: c", **MODULE_OK}),
         stats(failures={"web1": 1}, ok={"web1": 1})],
        "failed", 2,
        {"web1": HostStats(ok=1, failures=1)},
        [("web1", APPLY, False)], 1),
    "ignored failure": (
        [event("runner_on_failed", "web1", res={"msg": "meh"}, ignore_errors=True),
         stats(ok={"web1": 1})],
        "successful", 0,
        {"web1": HostStats(ok=1)}, [], 1),
    "run never started": ([], "failed", 1, {}, [], 0),
}


@pytest.mark.parametrize("name", RUNS)
def test_runs_become_data(name):
    events, status, rc, want_stats, want_failures, n_results = RUNS[name]
    run = parse_events(events, status, rc)
    assert run.status == status and run.rc == rc
    assert dict(run.stats) == want_stats
    assert [(f.host, f.task, f.unreachable) for f in run.failures] == want_failures
    assert len(run.results) == n_results
    assert run.ok == (status == "successful" and rc == 0)


def test_a_module_result_is_found_by_short_or_qualified_name():
    run = parse_events([event("runner_on_ok", "web1", action="ansible.legacy.provisioner_vhosts",
                              res=MODULE_OK)], "successful", 0)
    assert run.result_of("web1", "provisioner_vhosts").result["reloaded"] is True
    assert run.result_of("web2", "provisioner_vhosts") is None


# --------------------------------------------------------------------------- per-agency outcomes

def bundle(slug: str, host: str) -> SiteBundle:
    return SiteBundle(slug=slug, host=host, site_dir=Path("/www") / slug,
                      vhost_path=Path("/sites") / f"{slug}.conf", vhost=b"", files={})


BUNDLES = [bundle("dinkes", "web1"), bundle("dishub", "web1"), bundle("bapenda", "web2")]

WEB1_MODULE = {
    "changed": True, "reloaded": True, "nginx_tests": 4,
    "agencies": {
        "dinkes": agency("changed", created=["index.html"], kept_edited=["about.html"]),
        "dishub": agency("failed", "rejected", "nginx: [emerg] unknown directive \"x\""),
    },
}

OUTCOMES = {
    "module results per agency, unreachable host fails its agencies": (
        [event("runner_on_failed", "web1", res={"msg": "failed: dishub", **WEB1_MODULE}),
         event("runner_on_unreachable", "web2",
               res={"unreachable": True, "msg": "ssh: connect to host 127.0.8.121 port 22: "
                                                "Connection refused"})],
        "failed", 4,
        {"dinkes": ("changed", None), "dishub": ("failed", 'nginx: [emerg] unknown directive "x"'),
         "bapenda": ("failed", "host web2 unreachable: ssh: connect to host 127.0.8.121 port 22: "
                               "Connection refused")},
        {"web1": (True, 4), "web2": (False, 0)}),
    "the module crashed before reporting": (
        [event("runner_on_failed", "web1",
               res={"msg": "MODULE FAILURE\nSee stdout/stderr for the exact error",
                    "module_stderr": "Traceback (most recent call last):\n"
                                     "OSError: [Errno 28] No space left on device\n"})],
        "failed", 2,
        {"dinkes": ("failed", "host web1 task '" + APPLY + "' failed: module crashed: "
                              "OSError: [Errno 28] No space left on device"),
         "dishub": ("failed", "host web1 task '" + APPLY + "' failed: module crashed: "
                              "OSError: [Errno 28] No space left on device"),
         "bapenda": ("failed", "ansible run failed (rc 2) before reaching web2")},
        {"web1": (False, 0), "web2": (False, 0)}),
}


@pytest.mark.parametrize("name", OUTCOMES)
def test_each_agency_gets_its_own_outcome(name):
    events, status, rc, want, want_hosts = OUTCOMES[name]
    report = deploy_outcomes(parse_events(events, status, rc), BUNDLES)
    assert {s: (a.status, a.reason) for s, a in report.agencies.items()} == want
    assert {h: (d.reloaded, d.nginx_tests) for h, d in report.hosts.items()} == want_hosts
    assert sorted(a.slug for a in report.failed) == sorted(
        s for s, (status_, _reason) in want.items() if status_ == "failed")


def test_file_lists_are_carried_through():
    events = [event("runner_on_ok", "web1", res={**WEB1_MODULE, "agencies": {
        "dinkes": WEB1_MODULE["agencies"]["dinkes"]}})]
    report = deploy_outcomes(parse_events(events, "successful", 0), BUNDLES[:1])
    dinkes = report.agencies["dinkes"]
    assert (dinkes.created, dinkes.kept_edited, dinkes.vhost) == (("index.html",),
                                                                  ("about.html",), "created")
    assert dinkes.outcome().to_dict() == {
        "agency": "dinkes", "kind": "web", "status": "changed",
        "detail": "vhost created, 1 file created, kept 1 file the agency edited: about.html"}
