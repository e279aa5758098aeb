// The client against a real nats-server and the real Python actors (tests/test_typescript.py starts
// them and passes TIMESTEP_TEST_NATS_URL). The agent is tests/bus_agents.py's `bus-assistant` on the
// offline model: it calls the tool its input names, with the key=value pairs as arguments.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import {
  Client,
  buildRunRequest,
  RequestRefusedError,
  RunCancelledError,
  RunFailedError,
  RunRejectedError,
  TimestepError,
  ValidationError,
  type Run,
  type RunEvent,
} from "../src/index.js";

const URL = process.env.TIMESTEP_TEST_NATS_URL;
const AGENT = "bus-assistant";
const uid = (prefix: string) => `${prefix}-${randomUUID().slice(0, 10)}`;

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const all: RunEvent[] = [];
  for await (const event of events) all.push(event);
  return all;
}

function eventOf<T extends RunEvent["type"]>(events: RunEvent[], type: T): Extract<RunEvent, { type: T }> {
  const found = events.find((e) => e.type === type);
  assert.ok(found, `no ${type} event in ${events.map((e) => e.type).join(", ")}`);
  return found as Extract<RunEvent, { type: T }>;
}

describe("the TypeScript client over the bus", { timeout: 120_000 }, () => {
  let client: Client;

  before(async () => {
    assert.ok(URL, "TIMESTEP_TEST_NATS_URL is not set: run these tests through tests/test_typescript.py");
    client = await Client.connect({ servers: URL, env: {} });
  });

  after(async () => {
    await client?.close();
  });

  test("a direct run goes to completed with the final output, and a late follower replays it", async () => {
    const city = uid("Paris");
    const run = await client.submit(AGENT, `get_weather city=${city}`);
    assert.equal(run.accepted?.type, "accepted");
    assert.equal(run.accepted?.run_id, run.runId);
    const events = await collect(run.events());
    assert.deepEqual(events.map((e) => e.type), ["accepted", "started", "tool_call", "tool_output", "completed"]);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
    const completed = eventOf(events, "completed");
    assert.equal(completed.output, `get_weather returned: sunny in ${city}`);
    assert.equal(completed.usage.requests, 2);
    assert.deepEqual(await collect(client.events(run.runId)), events);
    assert.equal((await run.result({ timeoutSeconds: 10 })).output, completed.output);
    assert.equal(await run.getStatus(), "completed");
  });

  test("a run's context reaches its tools, and completed carries it as the run left it", async () => {
    const user = uid("ada");
    const run = await client.submit("bus-context", "remember fact=tea", { context: { user } });
    const completed = eventOf(await collect(run.events()), "completed");
    assert.equal(completed.output, `remember returned: ${user} remembers tea`);
    assert.deepEqual(completed.context, { user, facts: ["tea"] });
    assert.throws(() => buildRunRequest({ agent: "bus-context", input: "x", context: [] as unknown as Record<string, unknown> }), /^ValidationError: context: must be a JSON object, not array/);
  });

  test("sessionPolicy reject is refused with SessionBusy naming the unfinished run; a bad policy never leaves", async () => {
    const session = uid("chat");
    const first = await client.submit(AGENT, "think seconds=1.5", { sessionId: session });
    for await (const event of first.events()) if (event.type === "tool_call") break;
    await assert.rejects(client.submit(AGENT, "hello", { sessionId: session, sessionPolicy: "reject" }), (error: Error) => {
      assert.ok(error instanceof RunRejectedError, `${error.name}: ${error.message}`);
      assert.equal((error as RunRejectedError).error.type, "SessionBusy");
      assert.ok(error.message.includes(first.runId), error.message);
      return true;
    });
    const queued = await client.runAgentWorkflow(AGENT, "hello after", { session, sessionPolicy: "enqueue" });
    assert.equal(queued.status, "completed");
    await assert.rejects(
      client.submit(AGENT, "x", { sessionId: session, sessionPolicy: "later" as "reject" }),
      /^ValidationError: sessionPolicy: "later" is not one of enqueue, reject, interrupt/,
    );
  });

  test("runAgentWorkflow with a chosen workflowId returns the output; the same id again is the same run", async () => {
    const workflowId = uid("wf");
    const city = uid("Oslo");
    const seen: string[] = [];
    const result = await client.runAgentWorkflow(AGENT, `get_weather city=${city}`, {
      workflowId,
      session: uid("user"),
      onEvent: (e) => seen.push(e.type),
    });
    assert.deepEqual(result, {
      workflowId,
      status: "completed",
      output: `get_weather returned: sunny in ${city}`,
      interruptions: [],
      usage: result.usage,
    });
    assert.ok(seen.includes("tool_call") && seen.at(-1) === "completed", seen.join(","));
    const again = await client.runAgentWorkflow(AGENT, `get_weather city=${city}`, { workflowId });
    assert.equal(again.output, result.output);
    const events = await collect(client.events(workflowId));
    assert.equal(events.filter((e) => e.type === "started").length, 1);
  });

  test("a queued run reports its queue, and a lower priority number starts first", async () => {
    const queue = uid("q");
    await client.configureQueue(queue, { limit: 100, periodSeconds: 60, concurrency: 1 });
    // One slot: the blocker holds it while the two others wait, submitted low priority first.
    const blocker = await client.submit(AGENT, "think seconds=2", { queue, priority: 1 });
    for await (const event of blocker.events()) if (event.type === "started") break;
    const low = await client.queueAgentWorkflow(AGENT, "hello low", { queueName: queue, priority: 9 });
    const high = await client.submit(AGENT, "hello high", { queue, priority: 2 });
    // A deduplication id still queued refuses a second request with it.
    const deduplicationId = uid("dedup");
    const once = await client.submit(AGENT, "hello once", { queue, priority: 5, deduplicationId, sessionId: uid("user") });
    await assert.rejects(client.submit(AGENT, "hello twice", { queue, deduplicationId }), (error: Error) => {
      assert.ok(error instanceof RunRejectedError, `${error.name}: ${error.message}`);
      assert.match(error.message, new RegExp(`^deduplicationId: '${deduplicationId}' is already queued or running`));
      return true;
    });

    const [lowEvents, highEvents] = await Promise.all([collect(low.events()), collect(high.events())]);
    assert.deepEqual(highEvents.map((e) => e.type), ["accepted", "queued", "started", "completed"]);
    assert.equal(eventOf(highEvents, "queued").queue, queue);
    const started = (events: RunEvent[]) => Date.parse(eventOf(events, "started").time);
    assert.ok(started(highEvents) < started(lowEvents), "priority 2 started after priority 9");
    assert.equal((await once.result({ timeoutSeconds: 30 })).output, "You said: hello once");
    assert.deepEqual(await low.getResult(), {
      workflowId: low.workflowId,
      status: "completed",
      output: "You said: hello low",
      interruptions: [],
      usage: eventOf(lowEvents, "completed").usage,
    });
  });

  test("a run carries its W3C trace context from submit to every event", async () => {
    const traceId = randomUUID().replaceAll("-", "");
    const run = await client.submit(AGENT, "hello trace", { traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
    assert.equal(run.traceparent, `00-${traceId}-00f067aa0ba902b7-01`);
    await run.result({ timeoutSeconds: 30 });
    const consumer = await client.js.consumers.get("TIMESTEP_EVENTS", { filter_subjects: [client.subjects.runEvents(run.runId)] });
    const stored = await consumer.fetch({ max_messages: 10, expires: 2000 });
    const traceIds: string[] = [];
    for await (const msg of stored) {
      traceIds.push(msg.headers?.get("traceparent").split("-")[1] ?? "none");
      if (msg.info.pending === 0) break;
    }
    assert.ok(traceIds.length >= 3, traceIds.join(","));
    assert.deepEqual(new Set(traceIds), new Set([traceId]));
    await assert.rejects(client.submit(AGENT, "x", { traceparent: "00-abc-def-01" }), /^ValidationError: traceparent: '00-abc-def-01' is not a W3C traceparent/);
    assert.match((await client.submit(AGENT, "hello")).traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  test("live text reaches a plain nats.js subscription and client.live as it is yielded", async () => {
    const runId = uid("live");
    // What a NATS user writes: a core subscription on the run's live subject.
    const plain = client.nc.subscribe(`timestep.runs.live.${runId}`);
    const seen: { offset: number; text: string }[] = [];
    const reading = (async () => {
      for await (const msg of plain) seen.push(JSON.parse(new TextDecoder().decode(msg.data)));
    })();
    const pieces = client.live(runId);
    const first = pieces.next(); // subscribes before the run starts
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await client.submit(AGENT, "one two three four five", { stream: true, id: runId });
    const got = [(await first).value!];
    for await (const piece of pieces) got.push(piece);
    await client.nc.flush();
    plain.unsubscribe();
    await reading;
    const text = "You said: one two three four five";
    assert.equal(got.map((p) => p.text).join(""), text);
    assert.ok(got.length > 1, `${got.length} pieces`);
    let offset = 0;
    for (const piece of got) {
      assert.equal(piece.run_id, runId);
      assert.equal(piece.offset, offset);
      offset += piece.text.length;
    }
    assert.deepEqual(seen.map((p) => [p.offset, p.text]), got.map((p) => [p.offset, p.text]));
  });

  test("streamed deltas arrive in order and add up to the output", async () => {
    const run = await client.submit(AGENT, "one two three four five", { stream: true });
    const events = await collect(run.events());
    const deltas = events.filter((e) => e.type === "delta");
    // Text that comes while the run's previous delta is being stored joins the next one: at least one, in order.
    assert.ok(deltas.length >= 1, `${deltas.length} deltas`);
    assert.deepEqual(deltas.map((d) => d.seq), [...deltas.map((d) => d.seq)].sort((a, b) => a - b));
    assert.equal(deltas.map((d) => d.text).join(""), "You said: one two three four five");
    assert.equal(eventOf(events, "completed").output, "You said: one two three four five");
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  });

  test("a run that needs approval waits, and continues when approved", async () => {
    const to = uid("ada");
    const result = await client.runAgentWorkflow(AGENT, `send_email to=${to}`);
    assert.equal(result.status, "interrupted");
    assert.deepEqual(result.interruptions.map((a) => a.tool), ["send_email"]);
    assert.deepEqual(JSON.parse(result.interruptions[0].arguments), { to });
    await client.approve(result.workflowId, result.interruptions[0].call_id);
    const done = await client.run(result.workflowId).getResult({ timeoutSeconds: 30 });
    assert.equal(done.status, "completed");
    assert.equal(done.output, `send_email returned: sent to ${to}`);
  });

  test("a rejected tool call does not run, and the model hears why", async () => {
    const run = await client.submit(AGENT, `send_email to=${uid("bob")}`);
    let interruptions = 0;
    for await (const event of run.events()) {
      if (event.type === "interrupted") {
        interruptions += 1;
        await run.reject(event.approvals[0].call_id, "not today");
      }
    }
    assert.equal(interruptions, 1);
    const events = await collect(run.events());
    assert.ok(!events.some((e) => e.type === "tool_output"), "the tool ran");
    assert.match(String(eventOf(events, "completed").output), /not today/);
    const rejected = eventOf(events, "tool_rejected");
    assert.deepEqual([rejected.call_id, rejected.tool, rejected.message], ["call_1", "send_email", "not today"]);
  });

  test("the approvals inbox: listed across runs, approved with edited arguments, kept as the audit trail", async () => {
    const run = await client.submit(AGENT, `send_email to=${uid("ada")}`, { metadata: { ticket: "T-9" } });
    for await (const event of run.events()) if (event.type === "interrupted") break;
    const [record] = await client.listApprovals({ runId: run.runId });
    assert.deepEqual([record.agent, record.tool, record.call_id, record.status], [AGENT, "send_email", "call_1", "pending"]);
    assert.deepEqual(record.metadata, { ticket: "T-9" });
    assert.ok((await client.listApprovals({ tool: "send_email" })).some((a) => a.run_id === run.runId));
    assert.deepEqual(await client.listApprovals({ runId: run.runId, olderThanSeconds: 3600 }), []);
    await assert.rejects(client.listApprovals({ limit: 0 }), ValidationError);

    await assert.rejects(run.approve("call_1", { arguments: '{"to": 5}' }), (error: Error) => {
      assert.ok(error instanceof RequestRefusedError, `${error.name}: ${error.message}`);
      assert.equal(error.error.type, "InvalidRequest");
      assert.match(error.message, /^arguments\.to: 5 is not of type 'string'/);
      return true;
    });
    assert.equal((await client.listApprovals({ runId: run.runId }))[0].status, "pending");
    const edited = JSON.stringify({ to: uid("bob") });
    await run.approve("call_1", { arguments: edited, decidedBy: "ada" });
    const completed = await run.result({ timeoutSeconds: 30 });
    assert.equal(completed.output, `send_email returned: sent to ${JSON.parse(edited).to}`);
    const events = await collect(run.events());
    assert.equal(eventOf(events, "tool_output").arguments, edited);
    assert.equal(eventOf(events, "tool_approved").decided_by, "ada");
    const [audit] = await client.listApprovals({ status: "decided", runId: run.runId });
    assert.deepEqual([audit.status, audit.decided_by, audit.approved_arguments], ["approved", "ada", edited]);
  });

  test("approve, reject and cancel are answered: a refusal throws RequestRefusedError saying why", async () => {
    const refused = async (promise: Promise<unknown>, type: string, text: RegExp) =>
      assert.rejects(promise, (error: Error) => {
        assert.ok(error instanceof RequestRefusedError, `${error.name}: ${error.message}`);
        assert.equal(error.error.type, type);
        assert.match(error.message, text);
        return true;
      });
    const ghost = uid("ghost");
    await refused(client.approve(ghost, "call_1"), "UnknownRun", new RegExp(`^runId: no run '${ghost}'`));
    await refused(client.cancel(ghost), "UnknownRun", /no run/);

    const run = await client.submit(AGENT, `send_email to=${uid("dee")}`);
    for await (const event of run.events()) if (event.type === "interrupted") break;
    await refused(run.approve("call_9"), "NotWaiting", /^callId: run '.+' is not waiting for approval of 'call_9'; it waits on 'call_1'/);
    await run.approve("call_1");
    await run.result({ timeoutSeconds: 30 });
    await refused(run.reject("call_1"), "AlreadyFinished", /already finished \(completed\)/);
    await refused(run.cancel(), "AlreadyFinished", /nothing to cancel/);
    assert.deepEqual((await collect(run.events())).map((e) => e.type).slice(2), ["interrupted", "tool_approved", "tool_call", "tool_output", "completed"]);

    // Fire and forget still works: stored, and acted on by an agent actor.
    const slow = await client.submit(AGENT, "think seconds=30");
    for await (const event of slow.events()) if (event.type === "tool_call") break;
    await slow.cancel({ wait: false });
    await assert.rejects(slow.result({ timeoutSeconds: 10 }), RunCancelledError);
  });

  test("cancel stops a running run, and waiting for its result says so", async () => {
    const run = await client.submit(AGENT, "think seconds=30");
    const types: string[] = [];
    for await (const event of run.events()) {
      types.push(event.type);
      if (event.type === "tool_call") await run.cancel();
    }
    assert.equal(types.at(-1), "cancelled");
    await assert.rejects(run.result({ timeoutSeconds: 10 }), RunCancelledError);
    assert.equal(await run.getStatus(), "cancelled");

    // timeoutSeconds cancels a run that takes longer.
    const slow = await client.submit(AGENT, "think seconds=30", { timeoutSeconds: 0.5 });
    await assert.rejects(slow.result({ timeoutSeconds: 30 }), RunCancelledError);
  });

  test("schedules: create, list, a tick runs, delete", async () => {
    const name = uid("every-second");
    const ticks = client.events(undefined, { fromStart: false })[Symbol.asyncIterator]();
    const schedule = await client.createSchedule(name, "* * * * * *", { agent: AGENT, input: "tick" });
    assert.equal(schedule.name, name);
    assert.equal(schedule.request.agent, AGENT);
    assert.ok((await client.listSchedules()).some((s) => s.name === name));
    let completed: RunEvent | undefined;
    for (;;) {
      const { value, done } = await ticks.next();
      assert.ok(!done);
      if (value.type === "completed" && value.run_id.startsWith(`${name}-`)) {
        completed = value;
        break;
      }
    }
    await ticks.return?.(undefined);
    assert.equal(completed.type === "completed" && completed.output, "You said: tick");
    assert.equal(await client.deleteSchedule(name), true);
    assert.equal(await client.deleteSchedule(name), false);
    assert.ok(!(await client.listSchedules()).some((s) => s.name === name));

    const derived = await client.createScheduledAgentWorkflow("0 */6 * * *", AGENT, "Check the inbox", { session: "inbox" });
    assert.equal(await client.createScheduledAgentWorkflow("0 */6 * * *", AGENT, "Check the inbox", { session: "inbox" }), derived);
    const listed = (await client.listSchedules()).find((s) => s.name === derived);
    assert.equal(listed?.request.session_id, "inbox");
    assert.equal(await client.deleteSchedule(derived), true);

    // What only the scheduler checks: the cron's own syntax, and whether any agent actor hosts the agent.
    await assert.rejects(client.createSchedule(uid("bad"), "61 * * * *", { agent: AGENT, input: "x" }), (error: Error) => {
      assert.ok(error instanceof RequestRefusedError);
      assert.match(error.message, /^crontab: '61 \* \* \* \*' is not a valid cron expression/, error.message);
      return true;
    });
    const ghost = uid("ghost");
    await assert.rejects(client.createSchedule(uid("haunted"), "0 3 * * *", { agent: ghost, input: "boo" }), (error: Error) => {
      assert.ok(error instanceof RequestRefusedError);
      assert.match(error.message, new RegExp(`^request\\.agent: no agent named '${ghost}' is hosted by a running agent actor`), error.message);
      return true;
    });
    // Rare is not never: 29 February comes in leap years; with a weekday, every Monday of February.
    for (const rare of ["0 0 29 2 *", "0 0 31 2 1", "0 0 L 2 *"]) {
      const name = await client.createScheduledAgentWorkflow(rare, AGENT, "rarely");
      assert.equal(await client.deleteSchedule(name), true);
    }
  });

  test("queues: configure, then the status counts the admitted run", async () => {
    const name = uid("api");
    const status = await client.configureQueue(name, { limit: 10, periodSeconds: 60, concurrency: 2, tokensPerPeriod: 5000 });
    assert.deepEqual(
      [status.name, status.limit, status.period_seconds, status.concurrency, status.tokens_per_period],
      [name, 10, 60, 2, 5000],
    );
    const run = await client.submit(AGENT, "hello", { queue: name });
    await run.result({ timeoutSeconds: 30 });
    let [current] = await client.queueStatus(name);
    for (let i = 0; i < 100 && current.running > 0; i++) {
      // `completed` is published just before the workflow records its end.
      await new Promise((r) => setTimeout(r, 50));
      [current] = await client.queueStatus(name);
    }
    assert.equal(current.depth, 0);
    assert.equal(current.running, 0);
    assert.equal(current.admitted_in_window, 1);
    assert.ok(current.tokens_in_window > 0);
    assert.ok((await client.queueStatus()).some((q) => q.name === name));
    // The governor's refusal names the field as this client names it.
    await assert.rejects(client.configureQueue(name, { limit: 5 }), /^RequestRefusedError: periodSeconds: is missing; a rate limit needs both/);
    // Deleted once nothing waits or runs on it; a second delete finds none.
    assert.equal(await client.deleteQueue(name), true);
    assert.ok(!(await client.queueStatus()).some((q) => q.name === name));
    assert.equal(await client.deleteQueue(name), false);
    await assert.rejects(client.deleteQueue("default"), /^RequestRefusedError: name: 'default' holds the runs that name no queue/);
  });

  test("listRuns and getRun give runs as the database holds them, waiting ones too", async () => {
    const done = await client.submit(AGENT, `get_weather city=${uid("Rome")}`);
    await done.result({ timeoutSeconds: 30 });
    const waiting = await client.submit(AGENT, `send_email to=${uid("x")}@example.com`);
    for await (const event of waiting.events()) if (event.type === "interrupted") break;
    let info = await client.getRun(done.runId);
    for (let i = 0; i < 100 && info.status !== "completed"; i++) {
      await new Promise((r) => setTimeout(r, 100)); // `completed` goes out just before the database records it
      info = await client.getRun(done.runId);
    }
    assert.equal(info.agent, AGENT);
    assert.equal(info.status, "completed");
    assert.ok((info.usage?.total_tokens ?? 0) > 0);
    const listed = await client.listRuns({ status: "waiting", agent: AGENT, limit: 1000 });
    assert.ok(listed.some((r) => r.id === waiting.runId), "the waiting run is listed as waiting");
    assert.ok(listed.every((r) => r.status === "waiting" && r.agent === AGENT));
    await assert.rejects(client.getRun(uid("nope")), (e: unknown) => e instanceof RequestRefusedError && e.error.type === "UnknownRun");
    await client.cancel(waiting.runId);
  });

  test("steps gives a run's recorded steps, one whole by number", async () => {
    const city = uid("Lima");
    const done = await client.submit(AGENT, `get_weather city=${city}`);
    await done.result({ timeoutSeconds: 30 });
    const steps = await client.steps(done.runId);
    const tool = steps.find((s) => s.kind === "tool");
    assert.ok(tool, JSON.stringify(steps));
    assert.equal(tool.name, "tool:get_weather");
    assert.equal((tool.value as { output: string }).output, `sunny in ${city}`);
    assert.equal(steps.filter((s) => s.kind === "model").length, 2);
    assert.deepEqual(await client.steps(done.runId, tool.number), [tool]);
    await assert.rejects(client.steps(uid("nope")), (e: unknown) => e instanceof RequestRefusedError && e.error.type === "UnknownRun");
  });

  test("fork runs a finished run again from a step, the steps before it from the record", async () => {
    const city = uid("Quito");
    const done = await client.submit(AGENT, `get_weather city=${city}`);
    await done.result({ timeoutSeconds: 30 });
    const steps = await client.steps(done.runId);
    const lastModel = steps.filter((s) => s.kind === "model").at(-1)!.number;
    const fork = await client.fork(done.runId, lastModel);
    assert.equal(fork.forked_from, done.runId);
    const events = await collect(client.run(fork.id).events());
    assert.equal(events[0].type, "forked");
    const forked = eventOf(events, "forked");
    assert.deepEqual([forked.seq, forked.from_run, forked.from_step], [0, done.runId, lastModel]);
    assert.ok(!events.some((e) => e.type === "tool_call"), "the tool call before the fork point came from the record");
    assert.equal(eventOf(events, "completed").output, `get_weather returned: sunny in ${city}`);
    await assert.rejects(client.fork(done.runId, 99), (e: unknown) => e instanceof RequestRefusedError && e.error.field === "from_step");
  });

  test("a token budget, per run and as a queue's default, fails the run that crosses it", async () => {
    const run = await client.submit(AGENT, "hello", { maxTokens: 1 });
    await assert.rejects(run.result({ timeoutSeconds: 30 }), (error: Error) => {
      assert.ok(error instanceof RunFailedError, `${error.name}: ${error.message}`);
      assert.equal(error.error.type, "BudgetExceeded");
      assert.match(error.message, /over its budget of max_tokens=1/);
      return true;
    });
    const name = uid("budget");
    const status = await client.configureQueue(name, { limit: 10, periodSeconds: 60, maxTokensPerRun: 1 });
    assert.equal(status.max_tokens_per_run, 1);
    const queued = await client.submit(AGENT, "hello", { queue: name });
    await assert.rejects(queued.result({ timeoutSeconds: 30 }), /over its budget of max_tokens=1/);
    const roomy = await client.submit(AGENT, "hello", { queue: name, maxTokens: 10_000, modelRetry: { maxAttempts: 2 } });
    assert.equal((await roomy.result({ timeoutSeconds: 30 })).type, "completed");
  });

  test("retry settings are checked before sending, naming the field", async () => {
    assert.throws(() => buildRunRequest({ agent: AGENT, input: "hi", modelRetry: { maxAttempts: 0 } }), /^ValidationError: modelRetry\.maxAttempts: /);
    assert.throws(() => buildRunRequest({ agent: AGENT, input: "hi", modelRetry: { retries: 2 } as never }), /modelRetry\.retries: is not a setting/);
    const body = buildRunRequest({ agent: AGENT, input: "hi", modelRetry: { maxAttempts: 2, backoffSeconds: 0.5 } });
    assert.deepEqual(body.model_retry, { max_attempts: 2, backoff_seconds: 0.5 });
  });

  test("bad input is refused before sending, naming the field", async () => {
    const refused = async (promise: Promise<unknown>, field: string, text: RegExp) =>
      assert.rejects(promise, (error: Error) => {
        assert.ok(error instanceof ValidationError, `${error.name}: ${error.message}`);
        assert.equal(error.field, field);
        assert.match(error.message, text);
        assert.ok(error.message.startsWith(`${field}: `), error.message);
        return true;
      });
    await refused(client.submit(AGENT, "hi", { id: "a.b" }), "id", /'a\.b' contains '\.'; use only letters, digits/);
    await refused(client.submit(AGENT, "hi", { id: "x".repeat(129) }), "id", /129 characters long; the limit is 128/);
    await refused(client.submit(AGENT, "hi", { priority: 0 }), "priority", /from 1 to 2147483646/);
    await refused(client.submit(AGENT, "hi", { queue: "has space" }), "queue", /not a name/);
    await refused(client.submit(AGENT, "hi", { timeoutSeconds: -1 }), "timeoutSeconds", /greater than 0/);
    await refused(client.submit("", "hi"), "agent", /must not be empty/);
    await refused(client.submit(AGENT, [42 as unknown as Record<string, unknown>]), "input[0]", /must be an object/);
    await refused(client.approve("a*b", "call_1"), "runId", /contains '\*'/);
    await refused(client.configureQueue("q", { limit: 0 }), "limit", /from 1 to 2147483647/);
    await refused(client.submit(AGENT, "hi", { sessionId: "user\u0000" }), "sessionId", /control character \\x00/);
    await refused(client.createSchedule("s", "* * * * *", { agent: AGENT, input: "x", id: "no/slash" }), "request.id", /contains '\/'/);
    await refused(client.createSchedule("s", "every minute", { agent: AGENT, input: "x" }), "cron", /'every minute' has 2 fields; use 5 fields/);
    const never = /never fires: no time in the next 50 years matches it .*; use days every chosen month has/;
    for (const cron of ["0 0 31 2 *", "0 0 0 31 2 *", "0 0 30 feb ?", "* * 31 4,6,9-11/2 *", "0 0 30-31 2 *"]) {
      await refused(client.createSchedule("s", cron, { agent: AGENT, input: "x" }), "cron", never);
    }
    await refused(client.createScheduledAgentWorkflow("0 0 31 2 *", AGENT, "x"), "crontab", never);
  });

  test("a request the governor refuses is rejected with a reason naming the field", async () => {
    const ghost = uid("ghost");
    await assert.rejects(client.submit(ghost, "boo"), (error: Error) => {
      assert.ok(error instanceof RunRejectedError);
      assert.match(error.message, new RegExp(`^agent: no agent named '${ghost}'`));
      assert.equal(error.error.type, "InvalidRequest");
      return true;
    });
    // A body that skipped the client's checks (another program's, say) gets the governor's reason.
    const raw = await client.nc.request(client.subjects.submit, JSON.stringify({ agent: AGENT, input: "hi", priority: "high" }), {
      timeout: 10_000,
    });
    // The answer carries the reason as JetStream's API error, so a JetStream publish raises with it.
    const rejected = raw.json<{ type: string; error: { code: number; description: string } }>();
    assert.equal(rejected.type, "rejected");
    assert.equal(rejected.error.code, 400);
    assert.match(rejected.error.description, /^priority: 'high' is a string; expected a whole number from 1 to 2147483646/);
  });

  test("the JetStream publish of @nats-io/jetstream gets a PubAck once stored, or raises with the reason", async () => {
    const js = jetstream(client.nc);
    const id = uid("js");
    const body = JSON.stringify({ id, agent: AGENT, input: `get_weather city=${uid("Rome")}` });
    const ack = await js.publish(client.subjects.submit, body, { msgID: id, timeout: 10_000 });
    assert.deepEqual([ack.stream, ack.seq, ack.duplicate], ["TIMESTEP_SUBMIT", 1, false]);
    const again = await js.publish(client.subjects.submit, body, { msgID: id, timeout: 10_000 });
    assert.deepEqual([again.stream, again.duplicate], ["TIMESTEP_SUBMIT", true]);
    assert.equal((await client.run(id).result({ timeoutSeconds: 30 })).type, "completed");
    const ghost = uid("ghost");
    await assert.rejects(
      js.publish(client.subjects.submit, JSON.stringify({ agent: ghost, input: "boo" }), { timeout: 10_000 }),
      (error: Error) => {
        assert.equal(error.name, "JetStreamApiError");
        assert.match(error.message, new RegExp(`^agent: no agent named '${ghost}'`));
        return true;
      },
    );
  });

  test("connecting without a server says what to set", async () => {
    await assert.rejects(Client.connect({ env: { TIMESTEP_HOME: "/nonexistent-timestep-home" } }), (error: Error) => {
      assert.ok(error instanceof TimestepError);
      assert.match(error.message, /set NATS_URL, or start one with `timestep up`/);
      return true;
    });
  });
});

describe("waiting for a run that has not been submitted", { timeout: 30_000 }, () => {
  test("result() gives up after its timeout and says the run goes on", async () => {
    assert.ok(URL);
    const client = await Client.connect({ env: { NATS_URL: URL } });
    try {
      const run: Run = client.run(uid("never"));
      await assert.rejects(run.result({ timeoutSeconds: 0.5 }), /no result within 0\.5 s; the run goes on/);
      assert.equal(await run.getStatus(), undefined);
    } finally {
      await client.close();
    }
  });
});
