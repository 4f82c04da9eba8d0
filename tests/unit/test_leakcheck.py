"""The suite-wide leak guard finds the lab TSIG secret and PEM private keys in output files."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioner.safety.secrets import Redactor
from tests.leakcheck import Leak, find_leaks, main, tsig_secrets

ROOT = Path(__file__).resolve().parents[2]
SECRET = base64.b64encode(b"the-lab-tsig-secret-0123456789ab").decode()
PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()).decode()


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "tsig.key"
    path.write_text(f'key "paserkab-lab" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    return path


def output_tree(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "reports").mkdir(parents=True)
    (out / "pytest.log").write_text(f"PASSED a\nDEBUG signing with {SECRET}\nPASSED b\n")
    (out / "reports" / "ansible.json").write_text(f'{{"stdout": "ok"}}\n{{"key": "x"}}\n{PEM}')
    (out / "reports" / "clean.txt").write_text("dinkes.paserkab.go.id active\n")
    (out / "reports" / "binary.bin").write_bytes(b"\x00\xff" + SECRET.encode() + b"\x00")
    return out


def test_finds_the_tsig_secret_and_private_keys_by_file_and_line(tmp_path):
    out = output_tree(tmp_path)
    leaks = find_leaks([out], tsig_secrets(key_file(tmp_path)))
    assert leaks == [Leak(out / "pytest.log", 2, "TSIG secret"),
                     Leak(out / "reports" / "ansible.json", 3, "PEM private key block"),
                     Leak(out / "reports" / "binary.bin", 1, "TSIG secret")]
    assert all(SECRET not in str(leak) for leak in leaks)


def test_scrubbed_output_is_clean(tmp_path):
    log = tmp_path / "pytest.log"
    log.write_text(Redactor([SECRET]).scrub(f"signing with {SECRET}\n{PEM}"))
    assert find_leaks([log], [SECRET]) == []


def test_a_file_path_and_no_known_secret(tmp_path):
    out = output_tree(tmp_path)
    assert find_leaks([out / "pytest.log", out / "missing.log"]) == []
    assert find_leaks([out / "pytest.log"], [SECRET]) == [Leak(out / "pytest.log", 2,
                                                               "TSIG secret")]


def test_command_line_exit_codes(tmp_path, capsys):
    out = output_tree(tmp_path)
    key = key_file(tmp_path)
    assert main(["--tsig-key", str(key), str(out / "reports" / "clean.txt")]) == 0
    assert main(["--tsig-key", str(key), str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"leak: {out / 'pytest.log'}:2: TSIG secret" in printed and SECRET not in printed


def test_runs_as_a_module_from_the_repository(tmp_path):
    out = output_tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tests.leakcheck", "--tsig-key",
                           str(key_file(tmp_path)), str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 1 and done.stdout.count("leak: ") == 3
