"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright):
a run submitted over the bus appears on the runs page and turns `completed` live; an approval
clicked in the browser lets its run complete; a viewer's approve is refused, visibly; an admin
edits a queue's limit; a run that failed after retries says why at the top. A real nats-server
with the deployment's permission sets, the real actors, a real database; only the model is
replaced (the offline model, and a local OpenAI-compatible server that answers 429).
`TIMESTEP_CONSOLE_SCREENSHOTS=DIR` keeps a screenshot of each page."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from actors.console import Console, Login
from actors.health import HealthServer
from actors.system import System
from timestep.bus.server import EmbeddedNats, free_port
from timestep.client import Client
from timestep.settings import NatsSettings, Settings

# One xdist worker runs the module: the deployment and Chromium start once.
pytestmark = pytest.mark.xdist_group("console")

TESTS = Path(__file__).parent
DEPLOY_NATS = TESTS.parent / "deploy" / "nats"
AGENT = "bus-assistant"
#: An agent whose provider answers every call with a 429: it fails after MAX_ATTEMPTS calls.
BUSY = "console-busy"
MAX_ATTEMPTS = 4
#: An agent whose model streams "Hel", loses its connection, and on the next attempt answers "Hello.".
CUT = "console-cut"
WAIT_MS = 60_000


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _chromium() -> str:
    """Debian's chromium: installed here when missing and apt-get can (as root); else a skip saying what to install.

    The suite's workers may all get here at once on a fresh machine: they take turns on a lock file, so one
    installs and the others find it installed (concurrent apt-gets fail on dpkg's lock, and a failed install
    used to skip a worker's browser tests silently)."""
    found = shutil.which("chromium")
    if found:
        return found
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        pytest.skip("the console's browser tests need Chromium: install it with `apt-get install chromium` (Debian) and run them again")
    import fcntl

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(Path(tempfile.gettempdir()) / "timestep-tests-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tried = []
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            if shutil.which("chromium"):
                break
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
            tried.append(f"$ {' '.join(command)} (exit {done.returncode})\n{done.stderr[-1500:]}")
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("the console's browser tests need Chromium, and installing it failed:\n" + "\n".join(tried))
    return found


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


def _cut_model():
    import httpx
    import openai
    from agents.testing import ModelStep, ScriptedModel, assistant_message
    from openai.types.responses import ResponseTextDeltaEvent

    async def cut(call):
        yield ResponseTextDeltaEvent(
            type="response.output_text.delta", delta="Hel", item_id="m", output_index=0, content_index=0, sequence_number=1, logprobs=[]
        )
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://model.invalid/v1/responses"))

    return ScriptedModel([ModelStep.stream(cut), ModelStep(output=[assistant_message("Hello.")])])


@pytest.fixture(scope="module")
def busy_provider():
    """A local OpenAI-compatible server that answers every call with 429, and the agent that calls it."""
    from agents import Agent, OpenAIChatCompletionsModel
    from openai import AsyncOpenAI
    from test_model_http import Provider, error

    from timestep import ModelRetry, register_agent

    server = Provider([], default=error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "10"}))
    server.thread.start()
    model = OpenAIChatCompletionsModel(model="gpt-test", openai_client=AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0))
    register_agent(Agent(name=BUSY, model=model), model_retry=ModelRetry(max_attempts=MAX_ATTEMPTS, backoff_seconds=0.01))
    register_agent(Agent(name=CUT, model=_cut_model()), model_retry=ModelRetry(backoff_seconds=0.01))
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
async def deployment(db, tmp_path_factory, busy_provider):
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


@pytest.mark.browser
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
        # What the run was given, at the top, above what became of it.
        given = page.locator("#run-input")
        await given.locator(".text", has_text="get_weather city=Oslo-").wait_for(timeout=WAIT_MS)
        assert (await given.bounding_box())["y"] < (await page.locator("#outcome").bounding_box())["y"]
        await page.locator('#timeline li[data-type="tool_output"]', has_text="sunny in").wait_for(timeout=WAIT_MS)
        # The steps, as a waterfall: two model calls and the tool call between them, each opening to what it recorded.
        tool = page.locator('#steps li[data-kind="tool"]')
        await tool.wait_for(timeout=WAIT_MS)
        assert await page.locator('#steps li[data-kind="model"]').count() == 2
        assert "tool:get_weather" in await tool.locator("summary").inner_text()
        await tool.locator("summary").click()
        await tool.locator("pre", has_text="sunny in").wait_for(timeout=WAIT_MS)
        await screenshot(page, "run")
    finally:
        await context.close()


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_fork_from_here_on_a_step_opens_the_fork_which_takes_the_steps_before_it_from_the_record(deployment, browser) -> None:
    """A click on "Fork from here" on the last model call: the page becomes the fork's, which says
    what it was forked from, completes, and made no tool call (the tool step came from the record).
    A viewer's click is refused visibly, and nothing is forked."""
    city = uid("Lima")
    run = await deployment.client.submit(AGENT, f"get_weather city={city}")
    await run.result()
    await recorded(deployment.client, run.run_id)
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + f"/#/runs/{run.run_id}")
        last_model = page.locator('#steps li[data-kind="model"]').last
        await last_model.wait_for(timeout=WAIT_MS)
        number = await last_model.get_attribute("data-number")
        await last_model.locator("summary").click()
        await last_model.locator("button.fork").click(timeout=WAIT_MS)
        await page.wait_for_function(f"location.hash.startsWith('#/runs/{run.run_id}-fork-')", timeout=WAIT_MS)
        fork_id = page.url.split("#/runs/")[1]
        await page.wait_for_selector('#run-status[data-status="completed"]', timeout=WAIT_MS)
        forked = page.locator('#timeline li[data-type="forked"]')
        await forked.wait_for(timeout=WAIT_MS)
        assert f"from step {number} of run {run.run_id}" in await forked.inner_text()
        assert await page.locator('dd[data-fact="forked"] a', has_text=run.run_id).count() == 1
        assert await page.locator('#timeline li[data-type="tool_call"]').count() == 0
        await page.locator("#outcome", has_text=f"sunny in {city}").wait_for(timeout=WAIT_MS)
        await page.locator(f'#steps li[data-number="{number}"][data-kind="model"]').wait_for(timeout=WAIT_MS)  # the step it ran
        await screenshot(page, "run-forked")
        steps = await deployment.client.steps(fork_id)
        original = await deployment.client.steps(run.run_id)
        assert [s.value for s in steps if s.kind == "tool"] == [s.value for s in original if s.kind == "tool"]
    finally:
        await context.close()

    context, page = await page_for(browser, "viewer")
    try:
        await page.goto(deployment.login + f"/#/runs/{run.run_id}")
        await page.locator("#whoami", has_text="signed in as viewer").wait_for(timeout=WAIT_MS)
        step = page.locator('#steps li[data-kind="model"]').last
        await step.locator("summary").click(timeout=WAIT_MS)
        await step.locator("button.fork").click(timeout=WAIT_MS)
        error = page.locator("#error")
        await error.wait_for(state="visible", timeout=WAIT_MS)
        text = await error.inner_text()
        assert "Refused" in text and "NATS user 'viewer' may not publish" in text and "runs.fork" in text, text
        assert [r.id for r in await deployment.client.list_runs(limit=1000) if r.forked_from == run.run_id] == [fork_id]
    finally:
        await context.close()


@pytest.mark.browser
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


@pytest.mark.browser
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


@pytest.mark.browser
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


@pytest.mark.browser
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
        await page.locator('#schedules tr', has_text=queue).wait_for(timeout=WAIT_MS)
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


@pytest.mark.processes
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


@pytest.mark.processes
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


async def events_of(client: Client, run_id: str) -> list:
    return [event async for event in client.events(run_id)]


def seconds(text: str) -> float:
    """A duration as the console writes it ("0.43 s", "2.5 min") in seconds."""
    number, unit = text.split()
    return float(number) * (60 if unit == "min" else 1)


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_run_that_failed_after_retries_says_why_at_the_top_and_its_retries_once(deployment, browser) -> None:
    from timestep.client import RunFailedError

    run = await deployment.client.submit(BUSY, "Hello")
    with pytest.raises(RunFailedError):
        await run.result(timeout=60)
    retries = [e for e in await events_of(deployment.client, run.run_id) if e.type == "retrying"]
    assert [e.attempt for e in retries] == list(range(1, MAX_ATTEMPTS))  # what `timestep events` prints as attempt=
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + f"/#/runs/{run.run_id}")
        await page.wait_for_selector('#run-status[data-status="failed"]', timeout=WAIT_MS)
        await page.locator('#timeline li[data-type="failed"]').wait_for(timeout=WAIT_MS)
        await screenshot(page, "run-failed")
        # The outcome, said once, above the timeline.
        outcome = page.locator("#outcome")
        await outcome.wait_for(timeout=WAIT_MS)
        said = await outcome.inner_text()
        assert said.count("RateLimitError") == 1 and "HTTP 429" in said and "Rate limit reached" in said, said
        assert (await outcome.bounding_box())["y"] < (await page.locator("#timeline").bounding_box())["y"]
        # The identical retries: one card, numbered as the events and the command line number them.
        cards = page.locator('#timeline li[data-type="retrying"]')
        assert await cards.count() == 1
        card = await cards.inner_text()
        assert f"retried {MAX_ATTEMPTS - 1} times" in card and "RateLimitError" in card, card
        await cards.locator("summary").click()
        attempts = await cards.locator(".attempt").all_inner_texts()
        assert [a.split(" failed")[0] for a in attempts] == [f"attempt {n}" for n in range(1, MAX_ATTEMPTS)], attempts
        await screenshot(page, "run-failed-retries-open")
        # The steps: the call's attempts (and the waits between them) grouped in one row, opening to each.
        group = page.locator('#steps > li[data-kind="model"]')
        await group.wait_for(timeout=WAIT_MS)
        assert await group.count() == 1 and await group.get_attribute("data-attempts") == str(MAX_ATTEMPTS)
        summary = await group.locator("summary").first.inner_text()
        assert f"model ({MAX_ATTEMPTS} attempts, {MAX_ATTEMPTS} failed)" in summary and "failed" in summary, summary
        await group.locator("summary").first.click()
        inner = group.locator('.attempts > li[data-kind="model"]')
        await inner.first.wait_for(timeout=WAIT_MS)
        assert await inner.count() == MAX_ATTEMPTS
        assert "(attempt 2)" in await inner.nth(1).locator("summary").inner_text()
        # Nothing was streamed, so nothing is said to be void; a finished run cannot be cancelled.
        assert "void" not in await page.locator("#main").inner_text()
        assert await page.locator("#cancel").is_hidden()
        assert await page.locator("#error").is_hidden(), await page.locator("#error").inner_text()
    finally:
        await context.close()


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_duration_is_the_time_from_start_to_end_from_the_runs_events(deployment, browser) -> None:
    """On SQLite (Python 3.11) the database keeps a run's times in whole seconds; the events' are exact."""
    run = await deployment.client.submit(AGENT, "think seconds=0.3")
    await run.result(timeout=60)
    await recorded(deployment.client, run.run_id)
    events = {e.type: e for e in await events_of(deployment.client, run.run_id)}
    ran = (events["completed"].time - events["started"].time).total_seconds()
    queued = (events["started"].time - events["accepted"].time).total_seconds()
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + "/#/runs")
        row = page.locator(f'tr[data-run-id="{run.run_id}"]')
        await row.wait_for(timeout=WAIT_MS)
        shown = await row.locator("td.duration").inner_text()
        assert abs(seconds(shown) - ran) < 0.006, (shown, ran)
        await screenshot(page, "runs-durations")
        await row.locator("a").click()
        await page.wait_for_selector('#run-status[data-status="completed"]', timeout=WAIT_MS)
        facts = page.locator("dl.facts")
        await facts.locator('dd[data-fact="duration"]', has_text=" s").wait_for(timeout=WAIT_MS)
        assert abs(seconds(await facts.locator('dd[data-fact="duration"]').inner_text()) - ran) < 0.006
        assert abs(seconds(await facts.locator('dd[data-fact="queued"]').inner_text()) - queued) < 0.006
        # Submitted and started are the events' times too, so the first is never shown a second after the second.
        timed = (await (await page.request.get(deployment.open + f"/api/runs/{run.run_id}")).json())["run"]
        assert timed["accepted_at"] == events["accepted"].time.timestamp() and timed["started_at"] == events["started"].time.timestamp()
        assert await page.locator("#cancel").is_hidden()
        assert await page.locator("#error").is_hidden(), await page.locator("#error").inner_text()
        await screenshot(page, "run-completed")
    finally:
        await context.close()


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cancel_is_offered_while_a_run_can_be_cancelled_and_as_a_secondary_button(deployment, browser) -> None:
    run, call_id = await waiting_run(deployment.client, f"send_email to={uid('kim')}@example.com")
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + f"/#/runs/{run.run_id}")
        await page.wait_for_selector('#run-status[data-status="waiting"]', timeout=WAIT_MS)
        cancel = page.locator("#cancel")
        await cancel.wait_for(state="visible", timeout=WAIT_MS)
        title = page.locator("h2")
        size = "el => parseFloat(getComputedStyle(el).fontSize)"
        assert await cancel.evaluate(size) < await title.evaluate(size)
        assert (await cancel.bounding_box())["height"] < (await title.bounding_box())["height"]
        # "always" sits with its words, and the words tick it.
        decide = page.locator(f'.approval[data-call-id="{call_id}"]')
        box, label = decide.locator('input[name="always"]'), decide.locator("label", has_text="always")
        a, b = await box.bounding_box(), await label.bounding_box()
        assert abs((a["y"] + a["height"] / 2) - (b["y"] + b["height"] / 2)) < a["height"] / 2, (a, b)
        await label.get_by_text("always").click()
        assert await box.is_checked()
        await screenshot(page, "run-waiting")

        await cancel.click()
        await page.wait_for_selector('#run-status[data-status="cancelled"]', timeout=WAIT_MS)
        await cancel.wait_for(state="hidden", timeout=WAIT_MS)
        await page.locator("#outcome", has_text="cancelled").wait_for(timeout=WAIT_MS)
        await decide.get_by_text("not decided: the run ended").wait_for(timeout=WAIT_MS)  # no buttons left that cannot act
        assert await decide.locator("button").count() == 0
        await screenshot(page, "run-cancelled")
    finally:
        await context.close()


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_runs_page_says_the_status_its_list_says(deployment, browser, db, tmp_path) -> None:
    """A run ended in the database without an event saying so (here a queued run cancelled with
    `timestep workflows cancel`, which steers the database only): its page says what its list says."""
    import sys

    queue = uid("oneatatime")
    await deployment.client.configure_queue(queue, concurrency=1)
    first = await deployment.client.submit(AGENT, f"send_email to={uid('lee')}@example.com", queue=queue)
    async for event in first.events():
        if event.type == "interrupted":
            break
    second = await deployment.client.submit(AGENT, f"get_weather city={uid('Rome')}", queue=queue)  # waits behind the first
    assert (await deployment.client.get_run(second.run_id)).status == "queued"
    cli = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "workflows", "cancel", second.run_id], capture_output=True, text=True,
        env={**os.environ, "PG_CONNECTION_URI": db, "TIMESTEP_HOME": str(tmp_path)}, timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert (await deployment.client.get_run(second.run_id)).status == "cancelled"
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + "/#/runs")
        row = page.locator(f'tr[data-run-id="{second.run_id}"]')
        await row.locator("td.status", has_text="cancelled").wait_for(timeout=WAIT_MS)
        await row.locator("a").click()
        await page.locator('#timeline li[data-type="queued"]').wait_for(timeout=WAIT_MS)  # its events were read
        assert await page.locator("#run-status").get_attribute("data-status") == "cancelled"
        assert await page.locator("#cancel").is_hidden()
    finally:
        await context.close()
        await deployment.client.cancel(first.run_id)


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_console_has_an_icon(deployment, browser) -> None:
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + "/")
        icon = await page.locator('link[rel="icon"]').get_attribute("href")
        for path in (icon, "/favicon.ico"):
            response = await page.request.get(deployment.open + path)
            assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml"), (path, response.status)
            assert b"<svg" in await response.body()
    finally:
        await context.close()


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_text_streamed_by_a_failed_attempt_is_said_void_only_there(deployment, browser) -> None:
    run = await deployment.client.submit(CUT, "Hello", stream=True)
    completed = await run.result(timeout=60)
    assert completed.output == "Hello."
    context, page = await page_for(browser)
    try:
        await page.goto(deployment.open + f"/#/runs/{run.run_id}")
        await page.locator('#timeline li[data-type="completed"]').wait_for(timeout=WAIT_MS)
        texts = page.locator('#timeline li[data-type="delta"]')
        assert await texts.count() == 2
        assert "void: attempt 1 failed" in await texts.nth(0).inner_text()
        assert "void" not in await texts.nth(1).inner_text()
        await screenshot(page, "run-streamed-retry")
    finally:
        await context.close()
