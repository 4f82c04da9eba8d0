"""Helpers of the fault and offboarding tests: a private lab whose servers the tests stop
and break, CLI runs whose output is kept for the leak check, and the invariants every
scenario checks afterwards (nothing lost, nothing orphaned, nginx config valid)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from provisioner.dns import plan as dnsplan
from provisioner.dns.client import DnsClient
from provisioner.hosts import ansible
from provisioner.registry.load import load_inventory
from provisioner.registry.models import Agency, Inventory
from provisioner.site import render as site
from tests.leakcheck import find_leaks, tsig_secrets

from .conftest import TEST_NET, CliResult, TestLab, run_cli, start_test_lab

STOP_TIMEOUT = 10.0


@contextmanager
def onboarded_lab(root: Path, offset: int, slugs: Iterable[str]) -> Iterator[FaultLab]:
    """A private lab at ``offset`` in the test prefix with ``slugs`` onboarded, brought
    down at the end."""
    test_lab = start_test_lab(root, TEST_NET, offset=offset)
    try:
        fault_lab = FaultLab(test_lab)
        code, out = fault_lab.json("onboard", *slugs, "--yes")
        assert code == 0, out["outcomes"]
        yield fault_lab
    finally:
        test_lab.lab.down()


@dataclass
class FaultLab:
    """A private lab plus everything the tests printed (for the leak check)."""

    lab: TestLab
    outputs: list[str] = field(default_factory=list)

    @property
    def inventory(self) -> Inventory:
        """The inventory as it is on disk now (offboard and restore edit it)."""
        return load_inventory(self.lab.inventory_dir, self.lab.state_dir)

    def agency(self, slug: str) -> Agency:
        return self.inventory.agencies[slug]

    # ------------------------------------------------------------------ running the CLI

    def cli(self, *args: str) -> CliResult:
        """``provisioner ARGS`` in-process; the output is kept for the leak check."""
        result = run_cli(self.lab.inventory_dir, self.lab.state_dir, *args)
        self.outputs += [result.stdout, result.stderr]
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def json(self, *args: str) -> tuple[int, dict]:
        result = self.cli(*args, "--format", "json")
        assert result.stdout.strip(), result.stderr
        return result.exit_code, json.loads(result.stdout)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "provisioner", "--inventory", str(self.lab.inventory_dir),
                "--state-dir", str(self.lab.state_dir), *args]

    def kill_after(self, marker: str, *args: str, delay: float = 0.0) -> str:
        """Run ``provisioner ARGS`` as a process and SIGKILL it, with every process it
        started (an Ansible run in flight), ``delay`` seconds after it reports a line
        starting with ``marker``; what it printed until then."""
        process = subprocess.Popen(self.argv(*args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.lstrip().startswith(marker):
                time.sleep(delay)
                break
        os.killpg(process.pid, signal.SIGKILL)
        # ansible-runner starts ansible-playbook in a session of its own (a pty): not in the
        # group, found by what its command line names, as the next run finds it.
        for pid in ansible.running_playbooks(self.lab.inventory):
            with suppress(ProcessLookupError):  # it may end meanwhile
                os.kill(pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
        text = "".join(seen)
        self.outputs.append(text)
        assert any(line.lstrip().startswith(marker) for line in seen), text
        return text

    def confirm_after(self, prompt: str, between, *args: str) -> CliResult:
        """Run ``provisioner ARGS`` as a process; when it asks ``prompt`` (its plan is made),
        call ``between()``, then answer yes. The process's output and exit code."""
        process = subprocess.Popen(self.argv(*args), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shown = b""
        deadline = time.monotonic() + 120
        while prompt.encode() not in shown:
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk and time.monotonic() < deadline, shown.decode(errors="replace")
            shown += chunk
        between()
        out, err = process.communicate(b"y\n", timeout=120)
        result = CliResult(process.returncode, (shown + out).decode(errors="replace"),
                           err.decode(errors="replace"))
        self.outputs += [result.stdout, result.stderr]
        assert "Traceback" not in result.stdout + result.stderr
        return result

    # ------------------------------------------------------------------ servers

    def spec(self, name: str):
        return next(s for s in self.lab.lab.servers() if s.name == name)

    def stop(self, name: str) -> None:
        """Stop one lab server (ns1, ns2, acme, web1-sshd, ...) and wait until it is gone."""
        spec = self.spec(name)
        pid = self.lab.lab.running_pid(spec)
        assert pid, f"{name} is not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.lab.lab.running_pid(spec) is not None:
            assert time.monotonic() < deadline, f"{name} did not stop"
            time.sleep(0.02)

    @contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        self.stop(name)
        try:
            yield
        finally:
            self.lab.lab.up()

    # ------------------------------------------------------------------ state and invariants

    def host_tree(self, *, skip: Iterable[Path] = ()) -> dict[str, str]:
        """sha256 of every file the toolkit manages on the lab hosts (sites, vhosts,
        certificates, challenge files), except under ``skip``."""
        skipped = [Path(p) for p in skip]
        digest = {}
        for host in self.lab.inventory.hosts.values():  # hosts never change in these tests
            for root in (host.nginx_sites_dir, host.web_root, host.tls_dir, host.acme_webroot):
                for path in sorted(self.lab.lab.local(host, root).rglob("*")):
                    if path.is_file() and not any(path.is_relative_to(s) for s in skipped):
                        digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return digest

    def inventory_tree(self) -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.lab.inventory_dir.rglob("*")) if p.is_file()}

    def owned_orphans(self) -> list[str]:
        """Names this inventory owns in the zone that no active agency claims."""
        inventory = self.inventory
        state = DnsClient(inventory.settings).transfer()
        active = [a.fqdn for a in inventory.agencies.values() if a.hosted]
        return [d.fqdn for d in dnsplan.orphaned_names(state, inventory.settings.inventory_id,
                                                       active)]

    def records_at(self, server_name: str, name: str) -> dict[str, tuple[str, ...]]:
        """What one nameserver serves at ``name`` (A, TXT of its ownership record)."""
        inventory = self.inventory
        client = DnsClient(inventory.settings)
        server = next(s for s in inventory.settings.nameservers if s.name.startswith(server_name))
        found = {}
        for qname, rdtype in ((name, "A"), (dnsplan.ownership_name(name), "TXT")):
            answer = client.query(server, qname, rdtype)
            if answer.rrset is not None:
                found[rdtype] = answer.rrset.values
        return found

    def nginx_config_ok(self) -> None:
        for host in self.lab.inventory.hosts.values():
            done = subprocess.run(self.lab.lab.on_host(host, (
                host.nginx_binary, "-t", "-c", str(host.nginx_main_config))),
                capture_output=True, text=True)
            assert done.returncode == 0, done.stderr

    def vhosts_complete(self) -> None:
        """Every vhost on the hosts is exactly what the toolkit renders for its agency."""
        inventory = self.inventory
        for host in inventory.hosts.values():
            for path in self.lab.lab.local(host, host.nginx_sites_dir).glob("*.conf"):
                agency = inventory.agencies[path.stem]
                assert agency.hosted, f"{path}: vhost of an agency that is not active"
                options = {site.render_vhost(agency, host, inventory.settings, tls_ready=ready)
                           for ready in (False, True)}
                assert path.read_bytes() in options, f"{path} is not a complete vhost"

    def pebble_orders(self) -> int:
        """Orders Pebble has accepted so far (its log says 'Added order ...' for each)."""
        log = self.lab.lab.paths.pebble_dir / "pebble.log"
        return log.read_text(errors="replace").count("Added order")

    def leaks(self, tmp: Path) -> list:
        """Secrets in anything printed or logged: the CLI output of the tests, the lab's
        logs, Ansible's artifacts, the audit log."""
        printed = tmp / "outputs.txt"
        printed.write_text("\n".join(self.outputs))
        state = self.lab.state_dir
        scanned = [printed, *[p for p in state.rglob("*") if p.is_file() and (
            p.suffix == ".log" or p.name == "audit.jsonl" or "artifacts" in p.parts)]]
        return find_leaks(scanned, tsig_secrets(self.inventory.settings.tsig_key_file))


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (sha256, mode)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mode & 0o7777)
            for p in sorted(root.rglob("*")) if p.is_file()}
