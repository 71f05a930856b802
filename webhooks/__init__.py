"""Inbound webhook receivers and outbound callbacks.

``webhooks.schemes`` verifies (and, for tests and callbacks, signs) the four inbound signature
schemes: GitHub, Stripe, Standard Webhooks and a configurable one-header HMAC.  Each verifier
checks the raw body before anything is parsed and raises only the ``webhooks.errors`` tree.
``webhooks.sources`` builds each topology source's verifier from its secrets, and
``webhooks.receiver`` serves ``POST /webhooks/{source}`` (mounted by ``taskctl.serve``).
"""

__all__: list[str] = []
