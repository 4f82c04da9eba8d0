"""An agency's site: its rendered files for review, and how its staff reach them."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handles_errors
from .options import FORMAT_OPTION, Format
from .output import console, emit_json, table


@handles_errors
def render(ctx: typer.Context, agency: str = typer.Argument(..., help="The agency's slug."),
           output: Path = typer.Option(..., "--output", "-o",
                                       help="Folder to write to: the site goes to site/, the "
                                            "vhost to nginx/<slug>.conf (same-named files are "
                                            "replaced, never written through a symlink; a "
                                            "folder of another user is refused)."),
           tls_ready: bool = typer.Option(True, "--tls/--no-tls",
                                          help="Render the vhost as it is once the certificate "
                                               "is installed (HTTPS, HTTP redirects), or as "
                                               "before it (site served over HTTP)."),
           fmt: Format = FORMAT_OPTION) -> None:
    """Write an agency's starter site and vhost to a folder for review (no host touched).

    The site is what onboarding installs in <web_root>/<slug>/ on the agency's host,
    including .provisioner-manifest.json (sha256 of every generated file), which lets
    a later onboarding keep pages the agency has edited.
    """
    from ..site import render as site

    inv = ctx.obj.inventory()
    files = site.render_preview(inv.select([agency])[0], inv, tls_ready=tls_ready)
    site.write_files(files, output)
    rows = [{"path": path, "bytes": len(data), "sha256": site.sha256_hex(data)}
            for path, data in sorted(files.items())]
    if fmt is Format.json:
        emit_json({"agency": agency, "output": str(output), "tls_ready": tls_ready,
                   "files": rows})
        return
    table(["file", "bytes", "sha256"], [[r["path"], r["bytes"], r["sha256"][:16]] for r in rows],
          title=f"{agency}: {len(rows)} files written to {output}")


@handles_errors
def access_command(ctx: typer.Context, agency: str = typer.Argument(..., help="The agency's slug."),
                   fmt: Format = FORMAT_OPTION) -> None:
    """How the agency's staff reach its site's files over SFTP (in Bahasa Indonesia):
    host, port, user, the host key's SHA256 fingerprint, and what goes where."""
    from ..lifecycle import access, access_plan

    inv = ctx.obj.inventory()
    info = access_plan.access_info(inv, inv.select([agency])[0])
    if fmt is Format.json:
        emit_json(info.as_json())
        return
    console.print(access.access_text(info), markup=False, highlight=False, end="")
