"""Who may pass: API keys, OAuth2/OIDC bearer tokens, scopes, tenants and rate limits."""

__all__: list[str] = []
