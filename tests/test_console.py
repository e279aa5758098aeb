"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright):
a run submitted over the bus appears on the runs page and turns `completed` live; an approval
clicked in the browser lets its run complete; a viewer's approve is refused, visibly; an admin
edits a queue's limit. A real nats-server with the deployment's permission sets, the real
actors, a real database. `TIMESTEP_CONSOLE_SCREENSHOTS=DIR` keeps a screenshot of each page."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from actors.console import Console, Login
from actors.health import HealthServer
from actors.system import System
from timestep.bus.server import EmbeddedNats, free_port
from timestep.client import Client
from timestep.settings import NatsSettings, Settings

TESTS = Path(__file__).parent
DEPLOY_NATS = TESTS.parent / "deploy" / "nats"
AGENT = "bus-assistant"
WAIT_MS = 60_000


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _chromium() -> str:
    """Debian's chromium: installed here when missing and apt-get can (as root); else a skip saying what to install."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(command, capture_output=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if shutil.which("chromium"):
                return shutil.which("chromium")  # type: ignore[return-value]
    pytest.skip("the console's browser tests need Chromium: install it with `apt-get install chromium` (Debian) and run them again")


@pytest.fixture(scope="module")
async def browser():
    executable = _chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        await launched.close()


#: A user per permission set (nats-server refuses a config with an unused one), and the actors' user, who may do anything.
SETS = ("agent", "governor", "scheduler", "viewer", "client", "admin")
PASSWORDS = {user: f"pw-{user}-{uuid.uuid4().hex[:8]}" for user in ("actors", *SETS)}


@pytest.fixture(scope="module")
async def deployment(db, tmp_path_factory):
    """A nats-server whose users have the permission sets of deploy/nats/permissions.conf (the
    actors' user may do anything), the actors in this process, and the console on their HTTP
    server twice: open (as on 127.0.0.1) and with login (as anywhere else)."""
    import bus_agents  # noqa: F401  (the test agents)

    store = tmp_path_factory.mktemp("console-nats")
    shutil.copy(DEPLOY_NATS / "permissions.conf", store / "permissions.conf")
    users = ", ".join(
        [f'{{user: actors, password: "{PASSWORDS["actors"]}"}}']
        + [f'{{user: {u}, password: "{PASSWORDS[u]}", permissions: ${u.upper()}_PERMISSIONS}}' for u in SETS]
    )
    config = f"include ./permissions.conf\naccounts {{ TIMESTEP {{ jetstream: enabled, users: [{users}] }} }}\n"
    server = EmbeddedNats(store, port=free_port(), extra_config=config)
    server.start()
    base = Settings.from_env()
    none = {f.name: None for f in dataclasses.fields(NatsSettings) if f.name != "connect_deadline"}
    settings = dataclasses.replace(base, nats=NatsSettings(**{**none, "url": server.url, "user": "actors", "password": PASSWORDS["actors"]}))
    system = System(nats_url=server.url, settings=settings)
    await system.start()
    open_http = HealthServer(system, "127.0.0.1", 0, console=Console(Client(system.bus)))
    login_console = Console(login=Login(server.url, settings))
    login_http = HealthServer(system, "127.0.0.1", 0, console=login_console)
    await open_http.start()
    await login_http.start()
    client = Client(system.bus)
    try:
        yield type("Deployment", (), {"open": open_http.url, "login": login_http.url, "client": client, "settings": settings})
    finally:
        await open_http.stop()
        await login_http.stop()
        await login_console.close()
        await system.stop()
        server.stop()


async def page_for(browser, user: str | None = None):
    credentials = {"username": user, "password": PASSWORDS[user]} if user else None
    context = await browser.new_context(http_credentials=credentials, viewport={"width": 1280, "height": 800})
    return context, await context.new_page()


async def screenshot(page, name: str) -> None:
    target = os.environ.get("TIMESTEP_CONSOLE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


async def waiting_run(client: Client, text: str):
    run = await client.submit(AGENT, text)
    async for event in run.events():
        if event.type == "interrupted":
            return run, event.approvals[0].call_id
    raise AssertionError("the run did not stop for approval")


async def recorded(client: Client, run_id: str, tries: int = 300):
    """The run once the database has its end: `completed` goes out just before DBOS records it."""
    for _ in range(tries):
        info = await client.get_run(run_id)
        if info.status in ("completed", "failed", "cancelled"):
            return info
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} still {info.status}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_runs_page_shows_a_run_submitted_over_the_bus_and_follows_it_live(deployment, browser) -> None:
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + "/#/runs")
        await page.wait_for_selector("#live.on", timeout=WAIT_MS)  # following the events stream
        run = await deployment.client.submit(AGENT, f"get_weather city={uid('Oslo')}")
        row = page.locator(f'tr[data-run-id="{run.run_id}"]')
        await row.wait_for(timeout=WAIT_MS)  # it came without a reload
        await row.locator("td.status", has_text="completed").wait_for(timeout=WAIT_MS)
        assert (await row.locator("td").nth(2).inner_text()) == AGENT
        await screenshot(page, "runs")

        await row.locator("a").click()
        await page.wait_for_selector('#run-status[data-status="completed"]', timeout=WAIT_MS)
        await page.locator('#timeline li[data-type="tool_output"]', has_text="sunny in").wait_for(timeout=WAIT_MS)
        await screenshot(page, "run")
    finally:
        await context.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_approval_clicked_in_the_browser_lets_the_run_complete(deployment, browser) -> None:
    run, call_id = await waiting_run(deployment.client, f"send_email to={uid('ada')}@example.com")
    context, page = await page_for(browser, "client")  # the approver's role
    try:
        await page.goto(deployment.login + "/#/approvals")
        row = page.locator(f'tr[data-run-id="{run.run_id}"][data-call-id="{call_id}"]')
        await row.wait_for(timeout=WAIT_MS)
        assert "send_email" in await row.inner_text()
        await screenshot(page, "approvals")
        await row.locator('button[data-action="approve"]').click()
        completed = await run.result(timeout=60)
        assert "sent to" in str(completed.output)
        assert await page.locator("#error").is_hidden()
        info = await recorded(deployment.client, run.run_id)
        assert info.status == "completed" and info.usage is not None and info.usage.total_tokens > 0
    finally:
        await context.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_inbox_approves_with_edited_arguments_and_keeps_who_decided(deployment, browser) -> None:
    run, call_id = await waiting_run(deployment.client, f"send_email to={uid('eve')}@example.com")
    context, page = await page_for(browser, "client")
    try:
        await page.goto(deployment.login + "/#/approvals")
        row = page.locator(f'tr[data-run-id="{run.run_id}"][data-call-id="{call_id}"]')
        await row.wait_for(timeout=WAIT_MS)
        edited = json.dumps({"to": "checked@example.com"})
        await row.locator('textarea[name="arguments"]').fill(edited)
        await row.locator('button[data-action="approve"]').click()
        completed = await run.result(timeout=60)
        assert "sent to checked@example.com" in str(completed.output)
        [record] = await deployment.client.list_approvals("decided", run_id=run.run_id)
        assert record.approved_arguments == edited and record.decided_by == "client"  # the logged-in NATS user
    finally:
        await context.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_viewers_approve_is_refused_visibly(deployment, browser) -> None:
    run, call_id = await waiting_run(deployment.client, f"send_email to={uid('bob')}@example.com")
    context, page = await page_for(browser, "viewer")
    try:
        await page.goto(deployment.login + f"/#/runs/{run.run_id}")
        # The page fills in who is signed in once its /api/whoami answer comes: wait for it, not read at once.
        await page.locator("#whoami", has_text="signed in as viewer").wait_for(timeout=WAIT_MS)
        button = page.locator(f'button[data-action="approve"][data-call-id="{call_id}"]')
        await button.click(timeout=WAIT_MS)
        error = page.locator("#error")
        await error.wait_for(state="visible", timeout=WAIT_MS)
        text = await error.inner_text()
        assert "Refused" in text and "NATS user 'viewer' may not publish" in text and f"runs.command.{run.run_id}.approve" in text, text
        await screenshot(page, "viewer-refused")
        assert (await deployment.client.get_run(run.run_id)).status == "waiting"  # nothing was decided
    finally:
        await context.close()
        await deployment.client.cancel(run.run_id)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_admin_edits_a_queue_limit_on_the_queues_page(deployment, browser) -> None:
    queue = uid("consoleq")
    await deployment.client.configure_queue(queue, limit=5, period_seconds=60)
    await deployment.client.create_schedule(uid("tick"), "0 3 * * *", {"agent": AGENT, "input": "hello", "queue": queue})
    context, page = await page_for(browser, "admin")
    try:
        await page.goto(deployment.login + "/#/queues")
        row = page.locator(f'tr[data-queue="{queue}"]')
        await row.wait_for(timeout=WAIT_MS)
        await row.locator('input[name="limit"]').fill("7")
        await row.locator('button[data-action="save"]').click()
        await page.locator(f'tr[data-queue="{queue}"] input[name="limit"][value="7"]').wait_for(timeout=WAIT_MS)
        [status] = await deployment.client.queue_status(queue)
        assert status.limit == 7 and status.period_seconds == 60
        assert await page.locator("#error").is_hidden()
        await screenshot(page, "queues")
        await page.goto(deployment.login + "/#/schedules")
        await page.locator(f'#schedules tr', has_text=queue).wait_for(timeout=WAIT_MS)
        await screenshot(page, "schedules")
    finally:
        await context.close()

    # A viewer's edit of the same limit is refused, and the limit stays.
    context, page = await page_for(browser, "viewer")
    try:
        await page.goto(deployment.login + "/#/queues")
        row = page.locator(f'tr[data-queue="{queue}"]')
        await row.locator('input[name="limit"]').fill("9")
        await row.locator('button[data-action="save"]').click()
        await page.locator("#error", has_text="may not publish").wait_for(timeout=WAIT_MS)
        assert (await deployment.client.queue_status(queue))[0].limit == 7
    finally:
        await context.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_timestep_console_serves_against_a_deployment_and_asks_for_a_login_off_loopback(deployment, tmp_path) -> None:
    """`timestep console --nats URL`: open on 127.0.0.1, listing runs through the contract; on
    another address, every page and API call asks for a NATS login; SIGTERM ends it with 0."""
    import json
    import re
    import signal
    import sys
    import urllib.error
    import urllib.request

    env = {**os.environ, "NATS_USER": "admin", "NATS_PASSWORD": PASSWORDS["admin"], "TIMESTEP_HOME": str(tmp_path)}
    done = await deployment.client.submit(AGENT, f"get_weather city={uid('Lyon')}")
    await done.result(timeout=30)
    out = tmp_path / "console.out"
    for host, login in (("127.0.0.1", False), ("0.0.0.0", True)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli.main", "console", "--nats", deployment.settings.nats.url, "--host", host, "--port", "0"],
            env=env, stdout=out.open("w"), stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(600):
                found = re.search(r"timestep console: http://[^:]+:(\d+)/", out.read_text())
                if found or proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert found, out.read_text()
            url = f"http://127.0.0.1:{found.group(1)}"

            def get(path: str) -> tuple[int, str]:
                try:
                    with urllib.request.urlopen(url + path, timeout=15) as response:
                        return response.status, response.read().decode()
                except urllib.error.HTTPError as error:
                    return error.code, error.read().decode()

            status, body = await asyncio.to_thread(get, "/api/runs?limit=1000")
            if login:
                assert status == 401 and "log in with your NATS user" in body
                assert (await asyncio.to_thread(get, "/"))[0] == 401
            else:
                assert status == 200, body
                assert done.run_id in [r["id"] for r in json.loads(body)["runs"]]
                assert (await asyncio.to_thread(get, "/"))[0] == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, out.read_text()


def test_timestep_up_serves_the_console_when_asked(tmp_path: Path) -> None:
    """`timestep up --console` as a deploy runs it: the printed URL serves the page, the API and
    /metrics on one port, and SIGTERM stops it with exit code 0."""
    import re
    import urllib.request

    from processes import process_env, stop, up, wait_printed

    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(free_port()))
    out = tmp_path / "up.log"
    proc = up(out, env, "--agents", "bus_agents", "--console")
    try:
        wait_printed([(proc, out)])
        found = re.search(r"console: (http://127\.0\.0\.1:\d+)/", out.read_text())
        assert found, out.read_text()
        base = found.group(1)
        with urllib.request.urlopen(base + "/", timeout=10) as page:
            assert page.status == 200 and "console.js" in page.read().decode()
        with urllib.request.urlopen(base + "/api/runs", timeout=10) as runs:
            assert runs.status == 200 and "runs" in json.loads(runs.read())
        with urllib.request.urlopen(base + "/metrics", timeout=10) as metrics:
            assert "timestep_" in metrics.read().decode()
        # Another site's page in the operator's browser cannot act through the console: a form
        # post (no console header) and a script's request from another origin are refused.
        import urllib.error

        def post(headers: dict) -> tuple[int, str]:
            request = urllib.request.Request(base + "/api/runs/some-run/cancel", data=b"{}", method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        status, body = post({"Content-Type": "text/plain"})
        assert status == 403 and "X-Timestep-Console" in body, body
        status, body = post({"X-Timestep-Console": "1", "Origin": "https://evil.example"})
        assert status == 403 and "evil.example" in body, body
        status, body = post({"X-Timestep-Console": "1", "Content-Type": "application/json"})
        assert status != 403, body  # the console's own request gets through (to a refusal of the unknown run)
    finally:
        stop([proc])
    assert proc.returncode == 0, out.read_text()
