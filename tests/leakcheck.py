"""Suite-wide leak guard: no secret in what the tests printed or left behind.

Run at the end of CI over pytest's captured output (tee'd to a file) and any logs or
reports the run wrote::

    python -m tests.leakcheck --tsig-key STATE/lab/keys/tsig.key pytest.log reports/

Findings name the file, the line and what leaked, never the secret itself; exit 1 when
there is any. Scan output, not the state dir: that is where keys are meant to live.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from provisioner.safety.secrets import PEM_PRIVATE_KEY_HEADER, tsig_secrets_in


@dataclass(frozen=True)
class Leak:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def tsig_secrets(key_file: Path) -> list[str]:
    """The secrets of a BIND key file (the lab's TSIG key)."""
    return tsig_secrets_in(Path(key_file).read_text())


def _files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        elif path.is_file():
            yield path


def _leaks_in_line(text: str, secrets: list[str]) -> Iterable[str]:
    if any(secret in text for secret in secrets):
        yield "TSIG secret"
    if PEM_PRIVATE_KEY_HEADER.search(text):
        yield "PEM private key block"


def find_leaks(paths: Iterable[Path], secrets: Iterable[str] = ()) -> list[Leak]:
    """Every line of the files (directories are walked) holding a secret or a PEM private key."""
    wanted = [secret for secret in secrets if secret]
    return [Leak(path, number, what)
            for path in _files(paths)
            for number, text in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1)
            for what in _leaks_in_line(text, wanted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.leakcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tsig-key", type=Path, action="append", default=[],
                        help="BIND key file whose secret must not appear (repeatable)")
    parser.add_argument("paths", type=Path, nargs="+", help="files or folders to scan")
    args = parser.parse_args(argv)
    secrets = [secret for key in args.tsig_key for secret in tsig_secrets(key)]
    leaks = find_leaks(args.paths, secrets)
    for leak in leaks:
        print(f"leak: {leak}")
    scanned = sum(1 for _ in _files(args.paths))
    print(f"leakcheck: {len(leaks)} finding(s) in {scanned} file(s), "
          f"{len(secrets)} TSIG secret(s) looked for", file=sys.stderr)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
