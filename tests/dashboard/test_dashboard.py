"""The dashboard end to end in headless Chromium (Debian's ``chromium`` driven by Playwright):
sign in, watch a queue's depth change as messages are published, see a stream's offsets and
a group's lag, redrive a dead-letter queue with its button. Screenshot: test-artifacts/.

Skipped when /usr/bin/chromium or the playwright package is missing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.management.scenarios import dead_letters, stream_with_group

pytestmark = pytest.mark.extension

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def base_url(broker) -> str:
    if not broker.api:
        pytest.skip("no management API")
    parts = urlsplit(broker.api)
    return f"http://{parts.hostname}:{parts.port}"


@pytest.fixture
def api(base_url: str):
    with httpx.Client(base_url=base_url, auth=("guest", "guest"), timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_static_files_need_no_login(api: httpx.Client, base_url: str) -> None:
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    assert httpx.get(base_url + "/static/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(base_url + "/static/nope.js").status_code == 404
    assert httpx.get(base_url + "/static/..%2Fserver.py").status_code == 404
    plain = httpx.get(base_url + "/api/overview", auth=("guest", "wrong"))
    assert plain.status_code == 401 and plain.headers["www-authenticate"].startswith("Basic")
    scripted = httpx.get(base_url + "/api/overview", auth=("guest", "wrong"),
                         headers={"X-Requested-With": "XMLHttpRequest"})
    assert scripted.status_code == 401 and "www-authenticate" not in scripted.headers


def test_dashboard_end_to_end(browser, api: httpx.Client, base_url: str, broker_url: str,
                              qname: str, uid: str) -> None:
    assert api.put(f"/api/queues/%2F/{qname}", json={"durable": False}).status_code == 201
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        with dead_letters(broker_url, uid, n=3) as d, \
                stream_with_group(broker_url, f"{qname}.events", n=12):
            page.goto(base_url + "/")
            page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)  # signed in as guest
            assert page.text_content("#status") in ("signed in as guest", "connected")
            depth = f'tr[data-queue="{qname}"] td[data-col="messages"]'
            page.wait_for_function(
                "sel => document.querySelector(sel)?.textContent === '0'", arg=depth,
                timeout=WAIT_MS)

            for i in range(7):
                resp = api.post("/api/exchanges/%2F/amq.default/publish",
                                json={"properties": {}, "routing_key": qname,
                                      "payload": f"m{i}", "payload_encoding": "string"})
                assert resp.json() == {"routed": True}
            page.wait_for_function(  # the page refreshes itself: no reload
                "sel => document.querySelector(sel)?.textContent === '7'", arg=depth,
                timeout=WAIT_MS)
            page.wait_for_function("() => parseFloat(document.getElementById('r-publish')"
                                   ".textContent) > 0", timeout=WAIT_MS)
            assert page.locator('#chart polyline[data-series="publish"]').count() == 1

            page.wait_for_selector(f'#streams-body td:text-is("{qname}.events")', timeout=WAIT_MS)
            stream_rows = page.locator("#streams-body tr", has_text=f"{qname}.events")
            assert stream_rows.count() == 2  # one per partition
            page.wait_for_function(
                "name => [...document.querySelectorAll('#groups-body tr')]"
                ".filter(r => r.textContent.includes(name)).length === 2", arg=f"{qname}.events",
                timeout=WAIT_MS)

            dlq_depth = f'tr[data-dlq="{d.dlq}"] td[data-col="messages"]'
            page.wait_for_function(
                "sel => document.querySelector(sel)?.textContent === '3'", arg=dlq_depth,
                timeout=WAIT_MS)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            page.click(f'button[data-redrive="{d.dlq}"]')
            page.wait_for_function(
                "() => document.getElementById('dlq-result').textContent.startsWith('moved 3')",
                timeout=WAIT_MS)
            page.wait_for_function(
                "sel => document.querySelector(sel)?.textContent === '0'", arg=dlq_depth,
                timeout=WAIT_MS)
            assert d.ready(d.work) == 3 and d.ready(d.dlq) == 0
        assert errors == []
    finally:
        page.close()
        api.delete(f"/api/queues/%2F/{qname}")


def test_login_form_when_guest_is_refused(browser, base_url: str, api: httpx.Client,
                                          uid: str) -> None:
    """Wrong credentials keep the form up with an error; the right ones open the dashboard."""
    user = f"test.ops.{uid}"
    assert api.put(f"/api/users/{user}", json={"password": "s3cret",
                                               "tags": "administrator"}).status_code == 201
    page = browser.new_page()
    try:
        page.goto(base_url + "/")
        page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
        page.fill("#user", user)
        page.fill("#password", "wrong")
        page.click("#login button[type=submit]")
        page.wait_for_function("() => document.getElementById('login-error').textContent"
                               " === 'Login failed'", timeout=WAIT_MS)
        page.fill("#password", "s3cret")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
        page.wait_for_function(f"() => document.getElementById('status').textContent"
                               f" === 'signed in as {user}' || document.getElementById('status')"
                               f".textContent === 'connected'", timeout=WAIT_MS)
    finally:
        page.close()
        api.delete(f"/api/users/{user}")
