"""The status page's optional login token (status_page.login_token_env in deploy.yml).

When it is set, every page of the status blueprint and every read of the JSON API asks for
it (the API also takes its bearer token; webhooks and /healthz are never behind it). A
correct token opens a session: a random id in a signed cookie, the session itself in Redis
(deploy_state/sessions.py), so it expires after SESSION_SECONDS and logging out ends it
wherever the cookie was copied to. Failed logins are counted per client address; past
LOGIN_ATTEMPTS in LOGIN_WINDOW seconds the form answers 429. The cookie is Secure when the
page is served over HTTPS (the request is, or public_url says so: behind a TLS proxy).

Flask's SECRET_KEY, unless the app was given one, is derived from the login token: every
gunicorn worker and every restart signs alike, and changing the token logs everyone out
(a session also remembers the fingerprint of the token it was opened with).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, current_app, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue

from deploy_config import DeployConfig
from deploy_state.sessions import LoginSessions

from .extensions import deploy_config, redis_conn

SESSION_KEY = "status_session"
"""Session field holding the id of the viewer's login session (the session itself is in Redis)."""

SESSION_SECONDS = 12 * 3600
"""How long a login lasts; then the viewer logs in again."""

LOGIN_ATTEMPTS = 10
"""Failed logins allowed per client address in LOGIN_WINDOW; more are answered 429."""

LOGIN_WINDOW = 300
"""Seconds over which failed logins are counted."""


class HttpsAwareSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag whenever the page is served over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or served_over_https()


def served_over_https() -> bool:
    """The request came over TLS, or deployhook sits behind a TLS proxy (public_url is https)."""
    return request.is_secure or (deploy_config().public_url or "").startswith("https://")


def _token(config: DeployConfig) -> str:
    name = config.status_page.login_token_env
    return os.environ.get(name, "") if name else ""


def _derive(token: str, purpose: bytes) -> str:
    return hmac.new(token.encode(), b"deployhook status page: " + purpose, hashlib.sha256).hexdigest()


def setup(state: BlueprintSetupState) -> None:
    """On registration: a SECRET_KEY derived from the login token, and a cookie that is not sent cross-site."""
    app = state.app
    assert isinstance(app, Flask)
    token = _token(app.extensions["deployhook"]["config"])
    if token and not app.secret_key:
        app.secret_key = _derive(token, b"session signing key")
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=SESSION_SECONDS)
    app.session_interface = HttpsAwareSessions()


def logged_in() -> bool:
    """The viewer holds a live login session opened with the current login token."""
    token = _token(deploy_config())
    session_id = session.get(SESSION_KEY)
    if not token or not isinstance(session_id, str):
        return False
    return LoginSessions(redis_conn()).valid(session_id, _derive(token, b"login"))


def template_context() -> dict[str, bool]:
    """Whether the viewer is logged in (the header then offers to log out)."""
    return {"logged_in": bool(deploy_config().status_page.login_token_env and logged_in())}


def require_login() -> ResponseReturnValue | None:
    """Before each status view: let it run, or send the viewer to the login form."""
    config = deploy_config()
    name = config.status_page.login_token_env
    if not name or request.endpoint == "status.login":
        return None
    token = _token(config)
    if not token or not current_app.secret_key:
        return _unconfigured(name)
    if logged_in():
        return None
    if request.endpoint == "status.events":
        return render_template("error.html", status=401, message="Log in to follow this deployment."), 401
    return redirect(url_for("status.login", next=request.full_path.rstrip("?")))


def login() -> ResponseReturnValue:
    """The login form; a correct token sets the session cookie and goes back where the viewer was."""
    config = deploy_config()
    name = config.status_page.login_token_env
    target = _safe_next(request.values.get("next", ""))
    if not name:
        return redirect(target)
    token = _token(config)
    if not token or not current_app.secret_key:
        return _unconfigured(name)
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    sessions, address = LoginSessions(redis_conn()), request.remote_addr or "unknown"
    if sessions.failures(address) >= LOGIN_ATTEMPTS:
        message = f"Too many failed logins from {address}; try again in {LOGIN_WINDOW // 60} minutes."
        return render_template("error.html", status=429, message=message), 429, {"Retry-After": str(LOGIN_WINDOW)}
    given = request.form.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        sessions.fail(address, LOGIN_WINDOW)
        return render_template("login.html", next=target, failed=True), 401
    _end_session(sessions)
    session.clear()
    session.permanent = True  # the cookie expires with the session (SESSION_SECONDS), not in 31 days
    session[SESSION_KEY] = sessions.start(_derive(token, b"login"), SESSION_SECONDS)
    return redirect(target)


def logout() -> ResponseReturnValue:
    """Ends the session in Redis too: a copy of the cookie elsewhere stops working at once."""
    _end_session(LoginSessions(redis_conn()))
    session.clear()
    return redirect(url_for("status.login"))


def _end_session(sessions: LoginSessions) -> None:
    session_id = session.get(SESSION_KEY)
    if isinstance(session_id, str):
        sessions.end(session_id)


def _unconfigured(name: str) -> ResponseReturnValue:
    message = (
        f"The status page asks for a login token, but the variable {name} "
        "(status_page.login_token_env) is not set on the server. Set it and restart deployhook."
    )
    return render_template("error.html", status=503, message=message), 503


def _safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect to somewhere else."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return url_for("status.index")
    return target
