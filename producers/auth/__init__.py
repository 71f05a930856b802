"""Who may pass: API keys, OAuth2/OIDC bearer tokens, scopes, tenants and rate limits."""

from producers.auth.authenticator import Authenticator, open_authenticator
from producers.auth.principal import Principal
from producers.auth.scopes import Scope

__all__ = ["Authenticator", "Principal", "Scope", "open_authenticator"]
