"""Every CLI run pays for what provisioner.cli imports: the heavy modules stay deferred."""

from __future__ import annotations

import json
import subprocess
import sys

DEFERRED = (
    "provisioner.hosts.ansible", "provisioner.hosts.ansible_events", "provisioner.hosts.deploy",
    "provisioner.hosts.agent",
    "provisioner.lab.control", "provisioner.lab.prepare", "provisioner.lab.topology",
    "provisioner.lab.processes", "provisioner.lab.probes", "provisioner.lab.render",
    "provisioner.lab.keys",
    "provisioner.tls.acme", "provisioner.tls.certs", "provisioner.tls.decisions",
    "provisioner.tls.issuer", "provisioner.tls.listing", "provisioner.tls.served",
    "provisioner.lifecycle.onboard", "provisioner.lifecycle.offboard", "provisioner.site.render", "provisioner.verify.sweep",
    "provisioner.verify.verifier", "provisioner.verify.history", "provisioner.verify.report", "provisioner.registry.xlsx", "openpyxl",
    "ansible_runner", "paramiko", "acme", "httpx", "requests",
    "provisioner.hosts.pool", "provisioner.lifecycle.restore", "provisioner.lifecycle.archive",
    "provisioner.lifecycle.onboard_plan", "provisioner.lifecycle.run",
)


def test_importing_the_cli_leaves_the_heavy_modules_unloaded():
    code = "import json, sys, provisioner.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not [name for name in DEFERRED if name in loaded]
