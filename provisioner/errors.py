"""One exception tree for the whole package.

Only ``provisioner/cli/`` turns these into messages and exit codes:

* ``InputError`` / ``UsageError`` -> exit 2 (a user mistake: nothing was changed)
* every other ``ProvisionerError`` -> exit 1 (something checked or attempted failed)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ProvisionerError(Exception):
    """Base of every error the package raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


class UsageError(ProvisionerError):
    """Wrong command-line use (unknown agency, conflicting flags)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem in an input file: ``file:line: field: message (hint)``."""

    file: Path | str
    line: int | None
    field: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        text = f"{where}: {self.field}: {self.message}"
        return text + (f" (hint: {self.hint})" if self.hint else "")


class InputError(ProvisionerError):
    """The inventory (or another input file) is invalid; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid input"
        super().__init__(first)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ExternalError(ProvisionerError):
    """A server or tool outside the package failed or refused (DNS, SSH, ACME, nginx)."""

    def __init__(self, system: str, target: str, message: str, *, hint: str | None = None):
        super().__init__(f"{system} {target}: {message}", hint=hint)
        self.system = system
        self.target = target


class _SystemError(ExternalError):
    """An ExternalError of the one system its class names in ``system``."""

    system: str

    def __init__(self, target: str, message: str, *, hint: str | None = None):
        super().__init__(self.system, target, message, hint=hint)


class DNSError(_SystemError):
    system = "dns"

    def __init__(self, server: str, name: str, message: str, *, hint: str | None = None):
        super().__init__(f"{server} ({name})", message, hint=hint)


class HostError(_SystemError):
    system = "host"  # the target: the host's name


class AcmeError(_SystemError):
    system = "acme"


class LabError(_SystemError):
    system = "lab"  # the target: the lab server's name


class BackupError(_SystemError):
    system = "restic"  # the target: the repository


class RenderError(ProvisionerError):
    """A value refused at render time (hostile host name or path); nothing was written."""

    exit_code = 2


class SafetyError(ProvisionerError):
    """A safety gate refused the run (too many changes, unowned record, conflict)."""


class LockedError(ProvisionerError):
    """Another run holds the inventory lock."""
