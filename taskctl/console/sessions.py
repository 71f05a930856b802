"""Console sessions: an opaque cookie naming a server-side session that holds the credential."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "taskq_console"
LOGIN_COOKIE = "taskq_console_login"  # the login form's own CSRF token, before any session
PATH = "/console"
IDLE_S = 30 * 60.0  # a session unused this long ends
LIFETIME_S = 12 * 3600.0  # and every session ends this long after its login
MAX_SESSIONS = 10_000  # past this many, the least recently used session ends first


@dataclass(slots=True)
class Session:
    """A logged-in browser: the credential it logged in with, and its forms' CSRF token."""

    credential: str  # checked again on every request: a revoked key ends the session
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)

    def csrf_matches(self, sent: str | None) -> bool:
        """Return whether ``sent`` is this session's CSRF token (in constant time)."""
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    """The sessions of this process, by cookie value; the cookie itself carries nothing."""

    def __init__(self, *, idle_s: float = IDLE_S, lifetime_s: float = LIFETIME_S) -> None:
        self._idle_s = idle_s
        self._lifetime_s = lifetime_s
        self._by_cookie: dict[str, Session] = {}  # insertion order: least recently used first

    def __len__(self) -> int:
        return len(self._by_cookie)

    def start(self, credential: str) -> tuple[str, Session]:
        """Return a new session's cookie value and the session."""
        while len(self._by_cookie) >= MAX_SESSIONS:
            del self._by_cookie[next(iter(self._by_cookie))]
        cookie = secrets.token_urlsafe(32)
        session = Session(credential)
        self._by_cookie[cookie] = session
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        """Return the live session of ``cookie`` and mark it used, or ``None``."""
        session = self._by_cookie.pop(cookie, None) if cookie else None
        if session is None:
            return None
        now = time.monotonic()
        if now - session.used > self._idle_s or now - session.started > self._lifetime_s:
            return None  # already removed: an ended session stays ended
        session.used = now
        self._by_cookie[cookie or ""] = session  # to the end: most recently used
        return session

    def end(self, cookie: str | None) -> None:
        """End the session of ``cookie``, if there is one."""
        if cookie:
            self._by_cookie.pop(cookie, None)
