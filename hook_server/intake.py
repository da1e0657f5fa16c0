"""Intake: the web app's door to admission (deploy_state/admission.py), which every deployment goes through.

Webhooks, the poller and the API build a DeployRequest and call admit(); admission records the
deployment and enqueues its job (by dotted path: the web app never imports worker code) in one
Redis round trip, and appends 'queued' (or 'blocked') to the outbox: the reporter, not the web
process, tells GitHub and chat.
"""

from __future__ import annotations

from flask import current_app

from deploy_state.admission import Admission, Admitted, DeployRequest

from .extensions import deploy_config, redis_conn


def admit(request: DeployRequest) -> Admitted:
    """Admit a request in the web app: its config, its Redis, its job (the app's DEPLOY_JOB)."""
    return Admission(deploy_config(), redis_conn(), job=current_app.config["DEPLOY_JOB"]).admit(request)
