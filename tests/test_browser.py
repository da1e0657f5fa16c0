"""The status page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The app is served by a real HTTP server (werkzeug's, threaded) on the test's Redis. The main test
opens a deployment's page while a real `deployhook worker` deploys the sample app on the real Docker
engine, and watches the log grow and the status turn final without a reload. Screenshots of the
pages are saved in test-artifacts/ (gitignored) for people to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import testbed
import testjobs
from flask import Flask
from testbed import Bed
from werkzeug.serving import make_server

from deploy_config import DeployConfig
from deploy_state import DeploymentStore, Status
from hook_server import livelog
from workers.jobs import run_deployment

if TYPE_CHECKING:  # imported in the fixture at run time, so that a missing package skips with its reason
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DEPLOYHOOK = Path(sys.executable).parent / "deployhook"
STREAM_SECONDS = 1.5
"""Event streams end this often here, so the real deployment also exercises reconnecting with Last-Event-ID."""


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Headless Chromium: skipped without it, except in CI, where it must be there."""
    if not CHROMIUM.is_file():
        testbed.unavailable(f"{CHROMIUM} is missing (apt-get install chromium; .ci/provision installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        testbed.unavailable("Playwright for Python is missing (pip install -r requirements-dev.txt)")
        raise AssertionError from None  # unreachable: unavailable() raises
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def serve(app: Flask, threaded: bool = True) -> Iterator[str]:
    """The app behind a real HTTP server on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=threaded)
    thread = threading.Thread(target=server.serve_forever, name="status-page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def browser_page(chromium: Browser, **options: Any) -> Iterator[Page]:
    context = chromium.new_context(**options)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#log .line", "rows => rows.map(row => row.dataset.id)")
    return ids


def same_document(page: Page) -> bool:
    """True while the page has not been reloaded or left since mark_document()."""
    return bool(page.evaluate("window.__statusTestMark === 'unchanged'"))


def mark_document(page: Page) -> None:
    page.evaluate("window.__statusTestMark = 'unchanged'")


FINAL = "() => document.getElementById('deployment').dataset.final === 'true'"
"""The page saw its deployment end (the script marks it when the stream or the polling says so)."""

# The steps section, refreshed in place after the final status, shows every step through LAST, none running.
STEPS_DONE = """() => {
  const steps = document.getElementById('steps');
  return !steps.querySelector('.status-running') && steps.textContent.includes('LAST');
}"""

# Records every (status, log lines shown) pair the page goes through, as a person watching would see them.
WATCH = """() => {
  window.__trail = [];
  const note = () => {
    const status = document.getElementById('status');
    const seen = [status ? status.dataset.status : '', document.querySelectorAll('#log .line').length];
    const last = window.__trail[window.__trail.length - 1];
    if (!last || last[0] !== seen[0] || last[1] !== seen[1]) window.__trail.push(seen);
  };
  note();
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


# --- a real deployment of the sample app ----------------------------------------------------------------


@pytest.fixture
def bed_app_config() -> dict[str, Any]:
    """The bed's app with event streams that end every few seconds."""
    return {"STATUS_STREAM_SECONDS": STREAM_SECONDS}


def test_deployment_page_follows_a_real_deployment_live(bed: Bed, chromium: Browser, redis_url: str) -> None:
    sha = bed.commit(message="Add the inventory command")
    bed.push("staging", sha)
    deployment_id = bed.deliver("staging", sha)
    app = bed.client.application
    with serve(app) as base, browser_page(chromium, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"{base}/deployments/{deployment_id}")
        assert page.get_attribute("#status", "data-status") == "queued"
        assert log_ids(page) == []
        mark_document(page)
        page.evaluate(WATCH)

        # The worker starts only now: every line the page shows arrives while it is open.
        env = {**os.environ, "REDIS_URL": redis_url}
        worker_args = [str(DEPLOYHOOK), "worker", "--config", str(bed.config_file), "--env", "staging", "--burst"]
        worker = subprocess.Popen(worker_args, env=env, start_new_session=True)
        try:
            page.wait_for_function("() => document.querySelectorAll('#log .line').length >= 8", timeout=120_000)
            page.wait_for_selector("#steps tr.step", timeout=30_000)
            page.screenshot(path=ARTIFACTS / "deployment-running.png", full_page=True)
            page.wait_for_function(FINAL, timeout=300_000)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                testbed.kill_session(worker.pid)
                worker.wait()

        deployment = bed.store.require(deployment_id)
        assert deployment.status == Status.SUCCEEDED, f"{deployment.reason}\n{bed.log(deployment)[-3000:]}"
        page.wait_for_selector("#status[data-status='succeeded']", timeout=15_000)
        assert page.inner_text("#log-state") == "complete"
        assert same_document(page), "the page was reloaded; the log must grow in place"
        # Every line exactly once, in order, though the stream was reconnected several times.
        entries = bed.store.read_log(deployment_id)
        assert log_ids(page) == [entry["id"] for entry in entries]
        # The page went from queued with no line, through running with more and more lines, to succeeded.
        trail: list[tuple[str, int]] = [tuple(seen) for seen in page.evaluate("window.__trail")]
        assert trail[0] == ("queued", 0) and trail[-1] == ("succeeded", len(entries))
        while_running = {lines for status, lines in trail if status == "running" and 0 < lines < len(entries)}
        assert len(while_running) >= 3, trail
        page.wait_for_function(STEPS_DONE.replace("LAST", "cleanup"), timeout=15_000)
        page.screenshot(path=ARTIFACTS / "deployment.png", full_page=True)

        # Production too, so the overview shows both environments deployed.
        bed.push("production", sha)
        promoted = bed.deliver("production", sha)
        bed.work()
        assert bed.store.require(promoted).status == Status.SUCCEEDED

        page.goto(f"{base}/")
        for env in ("staging", "production"):
            card = page.inner_text(f"#env-{env}")
            assert "healthy" in card and sha[:12] in card and "test push" in card  # the delivery's head_commit
            assert "app" in card and "db" in card and "discord" in card and "running" in card
        assert "512 MiB" in page.inner_text("#env-staging")
        page.screenshot(path=ARTIFACTS / "index.png", full_page=True)
        page.goto(f"{base}/deployments")
        assert page.locator("table.history tbody tr").count() == 2
        page.screenshot(path=ARTIFACTS / "history.png", full_page=True)

        with browser_page(
            chromium, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
        ) as phone:
            phone.goto(f"{base}/")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
            phone.screenshot(path=ARTIFACTS / "index-phone.png", full_page=True)
            phone.goto(f"{base}/deployments")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            phone.screenshot(path=ARTIFACTS / "history-phone.png", full_page=True)
            phone.goto(f"{base}/deployments/{deployment_id}")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            phone.screenshot(path=ARTIFACTS / "deployment-phone.png", full_page=False)


# --- without Docker: actions, the polling fallback, escaping ---------------------------------------------------


def test_actions_appear_with_a_token_and_call_the_api(app: Flask, chromium: Browser, redis_conn: redis.Redis) -> None:
    store = DeploymentStore(redis_conn)
    queued = testbed.admitted(
        store, "staging", random_sha(), message="<script>alert(1)</script> release", pusher="<b>mallory</b>"
    )
    store.append_log(queued.id, "<img src=x onerror=alert(2)>")
    dialogs: list[str] = []
    with serve(app) as base, browser_page(chromium) as page:

        def on_dialog(dialog: Any) -> None:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.accept()

        page.on("dialog", on_dialog)
        page.goto(f"{base}/deployments/{queued.id}")
        assert "<script>alert(1)</script> release" in page.inner_text(".subject")  # shown as text, inert
        assert page.locator("#action-buttons").is_hidden()

        page.fill("#api-token", "not-the-token")
        page.click("#token-form button[type=submit]")
        assert page.locator("#action-buttons").is_visible()
        page.click("button[data-action=cancel]")
        page.wait_for_function("() => document.getElementById('action-result').textContent.includes('token')")
        assert page.locator("#action-buttons").is_hidden()  # a refused token is forgotten

        page.fill("#api-token", testbed.API_TOKEN)
        page.click("#token-form button[type=submit]")
        assert page.evaluate("sessionStorage.getItem('deployhook.apiToken')") == testbed.API_TOKEN
        page.click("button[data-action=cancel]")
        page.wait_for_selector("#status[data-status='cancelled']", timeout=15_000)
        assert store.require(queued.id).status == Status.CANCELLED
        page.wait_for_selector("button[data-action=cancel]", state="detached", timeout=15_000)

        page.click("button[data-action=redeploy]")
        page.wait_for_url(lambda url: not url.endswith(f"/deployments/{queued.id}"), timeout=15_000)
        redeploy = page.get_attribute("#deployment", "data-id")
        assert redeploy and store.require(redeploy).trigger == "redeploy" and redeploy != queued.id
        assert page.locator("#action-buttons").is_visible()  # the token stays for this tab
    assert [d for d in dialogs if not d.startswith("confirm")] == []  # nothing injected ever ran


@pytest.mark.parametrize(
    "without",
    [
        "threads",  # a single-threaded server (gunicorn's sync worker) refuses streams: the page polls
        "EventSource",  # a browser without Server-Sent Events
    ],
)
def test_log_follows_by_polling_without_server_sent_events(
    without: str,
    app: Flask,
    chromium: Browser,
    redis_conn: redis.Redis,
    deploy_config: DeployConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_TEST_STEP_SECONDS", "1.5")
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", random_sha(), message="polling")
    with serve(app, threaded=without != "threads") as base, browser_page(chromium) as page:
        if without == "EventSource":
            page.add_init_script("delete window.EventSource;")
        page.goto(f"{base}/deployments/{deployment.id}")
        mark_document(page)
        thread = threading.Thread(
            target=run_deployment,
            args=(deployment.id, testjobs.sleepy_pipeline),
            kwargs={"connection": redis_conn, "config": deploy_config},
        )
        thread.start()
        try:
            page.wait_for_selector("#status[data-status='succeeded']", timeout=30_000)
        finally:
            thread.join(30)
        page.wait_for_function("() => document.getElementById('log-state').textContent === 'complete'", timeout=10_000)
        assert same_document(page)
        assert log_ids(page) == [entry["id"] for entry in store.read_log(deployment.id)]
        page.wait_for_function(STEPS_DONE.replace("LAST", testjobs.STEPS[-1]), timeout=15_000)


FROM_BOTTOM = "() => { const log = document.getElementById('log'); return log.scrollHeight - log.scrollTop; }"
"""How far the log box's view is from its end: prepending earlier lines must not move what is in view."""


def test_show_earlier_lines_prepends_the_batch_before_and_the_live_tail_still_appends(
    app: Flask, chromium: Browser, redis_conn: redis.Redis
) -> None:
    store = DeploymentStore(redis_conn)
    deployment = testbed.admitted(store, "staging", random_sha(), message="a long build")
    deployment = store.set_status(deployment, Status.RUNNING)
    ids = [store.append_log(deployment.id, f"line {n:04d}") for n in range(1200)]
    with serve(app) as base, browser_page(chromium) as page:
        page.goto(f"{base}/deployments/{deployment.id}")
        mark_document(page)
        assert log_ids(page) == ids[-livelog.PAGE_LINES :]  # the tail, rendered by the server
        assert page.inner_text("#log-earlier") == "show earlier lines (700 more)"

        from_bottom = page.evaluate(FROM_BOTTOM)
        page.click("#log-earlier-link")
        page.wait_for_function("() => document.querySelectorAll('#log .line').length === 1000")
        assert log_ids(page) == ids[200:]
        assert page.inner_text("#log-earlier") == "show earlier lines (200 more)"
        assert abs(page.evaluate(FROM_BOTTOM) - from_bottom) <= 1, "the lines in view moved"
        page.click("#log-earlier-link")
        page.wait_for_selector("#log-earlier", state="detached")
        assert log_ids(page) == ids
        assert page.inner_text("#log .line:first-child").strip().endswith("line 0000")

        # The live stream follows on from the last line the page first showed.
        newer = [store.append_log(deployment.id, f"line {n}") for n in (1200, 1201)]
        page.wait_for_function("() => document.querySelectorAll('#log .line').length === 1202", timeout=15_000)
        store.set_status(store.require(deployment.id), Status.SUCCEEDED)
        page.wait_for_function(FINAL, timeout=15_000)
        assert log_ids(page) == ids + newer and same_document(page)
        page.screenshot(path=ARTIFACTS / "deployment-earlier-lines.png")


def random_sha() -> str:
    return os.urandom(20).hex()
