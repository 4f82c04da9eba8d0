"""Check that the inventory is ready to go live."""

from __future__ import annotations

import typer

from .common import handles_errors
from .options import FORMAT_OPTION, Format
from .output import console, emit_json, table


@handles_errors
def doctor(ctx: typer.Context,
           fmt: Format = FORMAT_OPTION) -> None:
    """Check that the inventory is ready to go live, changing nothing.

    Each web host: SSH with a known host key, sudo without a password, nginx's version
    and 'nginx -t', the TLS protocols and server_tokens of the main config's http level,
    ports 80 and 443 on the public address, free space under the web root, the clock.
    DNS: the TSIG key is accepted (a signed update whose prerequisite fails), a signed
    zone transfer, every nameserver authoritative with the same SOA serial, the
    parent's NS records, CAA. ACME: the directory answers, the account exists, staging
    or production. Every check says pass, warn, fail or skip, with a fix. Exit 1 when
    any check fails.
    """
    from ..doctor import run as doctoring

    report = doctoring.run(ctx.obj.inventory())
    if fmt is Format.json:
        emit_json(report.to_dict())
    else:
        table(["check", "target", "status", "detail", "fix"],
              [[c.id, c.target, c.status, c.detail, c.hint] for c in report.checks],
              title="doctor")
        console.print(", ".join(f"{n} {status}" for status, n in report.counts().items()),
                      markup=False)
    if report.failed:
        raise typer.Exit(1)
