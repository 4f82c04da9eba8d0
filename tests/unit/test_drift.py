"""Drift of files the toolkit owns: the pure parts (preflight's verdict, plan's diff row)."""

from __future__ import annotations

from pathlib import Path

from provisioner.hosts.agent import preflight_problems
from provisioner.lifecycle import onboard_plan
from provisioner.registry.load import load_inventory
from provisioner.site import render as site

REPO = Path(__file__).resolve().parents[2]
CONF = "/etc/nginx/sites-enabled/dinkes.conf"
BROKEN = {"uid": 0, "python": "3.11.2", "nginx_version": "1.22.1", "nginx_test_ok": False,
          "nginx_test_output": f'[emerg] unknown directive "this" in {CONF}:74',
          "nginx_test_file": CONF, "drifted": [CONF], "free_bytes": {}}


def test_a_config_broken_by_a_drifted_vhost_of_this_run_does_not_refuse_the_host():
    assert preflight_problems(BROKEN, "/usr/sbin/nginx", repairable=[CONF]) == []


def test_a_config_broken_by_a_drifted_vhost_of_another_agency_names_the_fix():
    [problem] = preflight_problems(BROKEN, "/usr/sbin/nginx", repairable=["/x/setda.conf"])
    assert "nginx -t fails" in problem and "'provisioner onboard dinkes' restores it" in problem


def test_a_config_broken_by_a_file_we_do_not_own_refuses_the_host_as_before():
    raw = {**BROKEN, "drifted": []}
    [problem] = preflight_problems(raw, "/usr/sbin/nginx", repairable=[CONF])
    assert problem == f"nginx -t fails on the current config: {raw['nginx_test_output']}"


def test_plan_shows_a_drifted_vhost_as_an_update_with_a_diff():
    inventory = load_inventory(REPO / "inventory", Path("/nonexistent/state"))
    agency = inventory.agencies["dinkes"]
    host = inventory.hosts[agency.host]
    desired = site.render_vhost(agency, host, inventory.settings, tls_ready=True)
    edited = desired.decode() + "this line was typed by hand\n"

    change = onboard_plan.vhost_change(agency, site.sha256_hex(edited.encode()), desired, True,
                                  drifted=True)
    diff = onboard_plan.drift_diff(site.vhost_path(agency, host), edited, desired)

    assert (change.kind, change.action) == ("vhost", "update") and "drift" in change.reason
    assert diff[0].startswith("--- ") and diff[1].startswith("+++ ")
    assert [line for line in diff[2:] if line[:1] in "+-"] == ["-this line was typed by hand"]
    long = onboard_plan.drift_diff(Path(CONF), edited + "x\n" * 500, desired, limit=10)
    assert len(long) == 11 and long[-1].endswith("more lines")
