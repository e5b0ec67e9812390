"""The `ivr` command: a thin layer over the library.

`main` is the click group; each command group lives in its own module: `service` (init-db,
serve, dev-token, models), `operators`, `calls` (calls, tickets, recordings) and `emulate`
(simulate, call). Their shared helpers are in `common`.
"""

from __future__ import annotations

import click

from ivr.cli import calls, emulate, operators, service
from ivr.cli.emulate import EMULATOR_MEDIA_PORT, media_server

__all__ = ["EMULATOR_MEDIA_PORT", "main", "media_server"]


@click.group()
@click.version_option(package_name="hotline-ivr")
def main() -> None:
    """Hotline IVR: Twilio voice webhooks, call tree, tickets and operators."""


for command in (
    service.init_db,
    service.serve,
    operators.operators,
    calls.calls,
    calls.tickets,
    service.dev_token,
    emulate.simulate,
    emulate.call,
    service.models,
    calls.recordings,
):
    main.add_command(command)
