"""The server of bench/webhook_ingest.py: taskq's app with the webhook receiver, verifying or not.

Run: python bench/webhook_app.py PORT verify|trust

``trust`` swaps each source's verifier for one that reads the same headers and checks no
signature, so the two runs differ by the signature check alone (a benchmark control, never a
product option: the receiver has no way to turn verification off).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import uvicorn

from producers.api.app import create_app
from taskctl.assembly import api_services
from topology.settings import load_settings
from webhooks.receiver import webhook_router
from webhooks.schemes.base import Delivery


class Trusting:
    """Takes a GitHub delivery's id and event from its headers without checking the signature."""

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        """Return the delivery the headers name."""
        return Delivery(headers["x-github-delivery"], headers["x-github-event"], None)


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    settings = load_settings()
    app = create_app(
        lambda: api_services(settings), settings.api, routers=[webhook_router(settings.auth)]
    )
    if mode == "trust":
        from webhooks.receiver import load_sources

        original = load_sources

        def trusting(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            sources = original(*args, **kwargs)  # type: ignore[arg-type]
            return {
                name: type(source)(source.name, source.spec, Trusting())
                for name, source in sources.items()
            }

        import webhooks.receiver

        webhooks.receiver.load_sources = trusting  # type: ignore[assignment]
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
