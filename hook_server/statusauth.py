"""The status page's optional login token (status_page.login_token_env in deploy.yml).

When it is set, every page of the status blueprint asks for the token the variable holds; a
correct one gets a signed session cookie. The webhooks, /healthz and the JSON API are not
behind it (the API has its own bearer token). Flask's SECRET_KEY, unless the app was given one,
is derived from the login token: every gunicorn worker and every restart signs alike, and
changing the token logs everyone out. The cookie also carries a fingerprint of the token, so a
changed token ends old sessions even with a SECRET_KEY set some other way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from deploy_config import DeployConfig

from .extensions import deploy_config

SESSION_KEY = "status_login"
"""Session field holding the fingerprint of the token the viewer logged in with."""


def _token(config: DeployConfig) -> str:
    name = config.status_page.login_token_env
    return os.environ.get(name, "") if name else ""


def _derive(token: str, purpose: bytes) -> str:
    return hmac.new(token.encode(), b"deployhook status page: " + purpose, hashlib.sha256).hexdigest()


def setup(state: BlueprintSetupState) -> None:
    """On registration: a SECRET_KEY derived from the login token, and a cookie that is not sent cross-site."""
    app = state.app
    token = _token(app.extensions["deployhook"]["config"])
    if token and not app.secret_key:
        app.secret_key = _derive(token, b"session signing key")
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


def template_context() -> dict[str, bool]:
    """Whether the viewer is logged in (the header then offers to log out)."""
    return {"logged_in": bool(deploy_config().status_page.login_token_env and session.get(SESSION_KEY))}


def require_login() -> ResponseReturnValue | None:
    """Before each status view: let it run, or send the viewer to the login form."""
    config = deploy_config()
    name = config.status_page.login_token_env
    if not name or request.endpoint == "status.login":
        return None
    token = _token(config)
    if not token or not current_app.secret_key:
        return _unconfigured(name)
    if hmac.compare_digest(str(session.get(SESSION_KEY, "")), _derive(token, b"login")):
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
    given = request.form.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return render_template("login.html", next=target, failed=True), 401
    session.clear()
    session[SESSION_KEY] = _derive(token, b"login")
    return redirect(target)


def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("status.login"))


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
