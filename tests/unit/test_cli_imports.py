"""Every CLI run pays for what provisioner.cli imports: the heavy modules stay deferred."""

from __future__ import annotations

import json
import subprocess
import sys

DEFERRED = (
    "provisioner.ansible", "provisioner.hosts", "provisioner.lab", "provisioner.tls",
    "provisioner.onboard", "provisioner.offboard", "provisioner.site", "provisioner.sweep",
    "provisioner.verify", "provisioner.history", "provisioner.report", "provisioner.xlsx", "openpyxl",
    "ansible_runner", "paramiko", "acme", "httpx", "requests",
)


def test_importing_the_cli_leaves_the_heavy_modules_unloaded():
    code = "import json, sys, provisioner.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not [name for name in DEFERRED if name in loaded]
