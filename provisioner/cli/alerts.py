"""The alert channels: send a test message, see what waits to be sent."""

from __future__ import annotations

import typer

from ..errors import UsageError
from ..registry.models import Inventory
from .common import handles_errors
from .options import FORMAT_OPTION, Format, Lang
from .output import console, emit_json, table

alerts_app = typer.Typer(help="Alerts on change after each sweep (e-mail, webhook, "
                              "Telegram): test the channels, see what waits to be sent.",
                         no_args_is_help=True)


def _configured_alerts(inv: Inventory) -> None:
    if inv.settings.alerts is None:
        raise UsageError("no alerts configured",
                         hint=f"add an alerts: block to {inv.root / 'group_vars' / 'all.yml'} "
                              "(README: Alerts)")


@alerts_app.command("test")
@handles_errors
def alerts_test(ctx: typer.Context,
                lang: Lang = typer.Option(Lang.id, "--lang", help="Language of the message."),
                fmt: Format = FORMAT_OPTION) -> None:
    """Send a test message through every configured channel (no state is changed).

    Exit 1 when any channel could not deliver.
    """
    from ..verify import alerts

    inv = ctx.obj.inventory()
    _configured_alerts(inv)
    outcomes = alerts.send_test(inv, lang.value)
    if fmt is Format.json:
        emit_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            console.print(f"{o.channel}: " + ("delivered" if o.error is None
                                              else f"FAILED: {o.error}"), markup=False)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


@alerts_app.command("status")
@handles_errors
def alerts_status(ctx: typer.Context,
                  fmt: Format = FORMAT_OPTION) -> None:
    """The configured channels and the changes waiting for each (after a failed delivery)."""
    from ..verify import alerts
    from ..verify import history as history_store

    inv = ctx.obj.inventory()
    _configured_alerts(inv)
    channels = [c.name for c in alerts.channels_of(inv.settings.alerts, inv.settings.zone)]
    queues = {q.channel: q for q in history_store.alert_queues(inv.state_dir)}
    if fmt is Format.json:
        emit_json({"channels": channels, "waiting": [q.to_dict() for q in queues.values()]})
        return
    table(["channel", "waiting", "since", "attempts", "last error"],
          [[name, queues[name].waiting, queues[name].oldest, queues[name].attempts,
            queues[name].last_error] if name in queues else [name, 0, "", "", ""]
           for name in channels], title="alert channels")
