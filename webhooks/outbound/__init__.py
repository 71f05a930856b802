"""SSRF-safe outbound HTTP: check callback URLs, then POST to a checked, pinned address."""
