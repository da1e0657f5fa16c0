"""Status-page login sessions and the login rate limit, kept in Redis.

The cookie holds only a random session id (signed); the session itself lives here, so that
logging out ends it everywhere the cookie was copied to, and it expires on its own.
"""

from __future__ import annotations

import secrets

from redis import Redis

from . import keys
from .replies import text

_ADDRESS_CHARS = 64
"""A client address is at most this long in a key (an IPv6 address fits): keys stay bounded."""


class LoginSessions:
    """Login sessions and failed-login counts, on an explicitly passed Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.conn = connection

    def start(self, fingerprint: str, seconds: int) -> str:
        """A new session for whoever logged in with the token of `fingerprint`; returns its id."""
        session_id = secrets.token_urlsafe(32)
        self.conn.set(keys.login_session(session_id), fingerprint, ex=seconds)
        return session_id

    def valid(self, session_id: str, fingerprint: str) -> bool:
        """The session exists, has not expired, and was opened with the current token."""
        if not session_id or len(session_id) > 64:
            return False
        stored = self.conn.get(keys.login_session(session_id))
        return stored is not None and secrets.compare_digest(text(stored), fingerprint)

    def end(self, session_id: str) -> None:
        if session_id:
            self.conn.delete(keys.login_session(session_id))

    def failures(self, address: str) -> int:
        """Failed logins from address in the current window."""
        return int(self.conn.get(keys.login_failures(address[:_ADDRESS_CHARS])) or 0)

    def fail(self, address: str, window: int) -> int:
        """Count one failed login from address; the count lapses `window` seconds after the first."""
        key = keys.login_failures(address[:_ADDRESS_CHARS])
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            count, _ = pipe.execute()
        return int(count)
