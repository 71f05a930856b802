"""``taskctl callback-secret URL``: the secret a callback receiver verifies its deliveries with."""

from __future__ import annotations

from typing import Annotated

import typer

from topology.errors import SettingsError


def callback_secret(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="The callback URL (its origin decides the secret).")
    ],
) -> None:
    """Print the secret that signs the callbacks to URL.

    The Standard Webhooks secret (whsec_...) of URL's origin: the receiver there verifies
    its deliveries with it.
    """
    from topology.settings import CallbackSettings, read_section
    from webhooks.callbacks import endpoint_secret

    settings = read_section(CallbackSettings)
    if settings.callback_signing_key is None:
        raise SettingsError("TASKQ_CALLBACK_SIGNING_KEY is not set; callbacks are not signed yet")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{url!r} is not an http(s) URL")
    typer.echo(endpoint_secret(settings.callback_signing_key.get_secret_value(), url))
