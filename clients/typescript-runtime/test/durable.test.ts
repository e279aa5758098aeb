/**
 * Durable runs of a TypeScript agent on a real PostgreSQL: each test's program is its own Node process
 * (fixtures/weather.ts), killed with SIGKILL where a test says so. TIMESTEP_TEST_PG_URL names an
 * empty database for these tests (the Python suite's tests/test_typescript_runtime.py makes one).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { Agent } from "@openai/agents";

import { DatabaseSession, ValidationError, configureDBOS, createScheduledAgentWorkflow, runAgentWorkflow } from "../src/index.js";
import { poolShares } from "../src/config.js";

const DATABASE = process.env.TIMESTEP_TEST_PG_URL;
const PROGRAM = fileURLToPath(new URL("../fixtures/weather.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "timestep-ts-runtime-"));
let made = 0;
const children = new Set<ReturnType<typeof spawn>>();

after(() => {
  for (const child of children) child.kill("SIGKILL");
});

interface Outcome {
  result: { workflowId: string; status: string; output: string; usage: { requests: number }; interruptions: { callId: string; tool: string; arguments: string }[] };
  steps: { number: number; name: string }[];
  status: string;
}

/** One run of the program: `mode` (`run` or `recover`) on workflow `id`, with `calls` counting what ran. */
function program(mode: string, id: string, calls: string, extra: Record<string, string> = {}, args: string[] = []) {
  const child = spawn(process.execPath, [PROGRAM, mode, id, ...args], {
    env: { ...process.env, PG_CONNECTION_URI: DATABASE, CALLS_FILE: calls, TIMESTEP_EXECUTOR_ID: `ts-test-${process.pid}`, ...extra },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }>((resolve) =>
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal, out, err });
    }),
  );
  return { child, done };
}

async function outcome(mode: string, id: string, calls: string, extra: Record<string, string> = {}, args: string[] = []): Promise<Outcome> {
  const { code, out, err } = await program(mode, id, calls, extra, args).done;
  assert.equal(code, 0, `node weather.js ${mode} ${id} exited ${code}:\n${out}\n${err}`);
  return lastJson<Outcome>(out);
}

/** Wait until the program's tool holds (it writes `hold`, then waits). */
async function holding(hold: string): Promise<void> {
  for (let i = 0; !existsSync(hold); i++) {
    assert.ok(i < 600, "the tool did not start within 60 s");
    await sleep(100);
  }
}

/** The last line a program printed, as JSON. */
function lastJson<T>(out: string): T {
  return JSON.parse(out.trim().split("\n").at(-1)!) as T;
}

/** The first line the program printed, once it has printed one (it goes on running). */
async function firstLine(child: ReturnType<typeof spawn>): Promise<unknown> {
  let out = "";
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]!));
    });
    child.on("exit", (code) => reject(new Error(`exited ${code} before printing: ${out}`)));
  });
}

/** What ran, as the program counted it: `model-1`, `tool`, `model-2`, each with the pid it ran in. */
function ran(calls: string): string[][] {
  return existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n").filter(Boolean).map((line) => line.split(" ")) : [];
}

function fresh(): { id: string; calls: string } {
  made += 1;
  return { id: `ts-run-${process.pid}-${made}-${Date.now()}`, calls: join(dir, `calls-${made}.txt`) };
}

describe("runAgentWorkflow", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  test("a run with a tool completes, each model call and the tool call a recorded step", async () => {
    const { id, calls } = fresh();
    const done = await outcome("run", id, calls);
    assert.equal(done.result.output, "The weather: sunny in Paris");
    assert.equal(done.status, "completed");
    assert.equal(done.result.usage.requests, 2);
    assert.deepEqual(done.steps.map((s) => s.name), ["model", "tool:get_weather", "model"]);
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-2"]);
  });

  test("the same workflow id again returns the first run's result and calls nothing", async () => {
    const { id, calls } = fresh();
    const first = await outcome("run", id, calls);
    const again = await outcome("run", id, calls);
    assert.deepEqual(again.result, first.result);
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-2"]);
  });

  for (const mode of ["run", "queue"]) {
    test(`killed with SIGKILL inside its tool, the run resumes in a new process without calling the model again (${mode})`, async () => {
      const { id, calls } = fresh();
      const hold = join(dir, `hold-${id}`);
      const first = program(mode, id, calls, { HOLD_FILE: hold });
      await holding(hold);
      first.child.kill("SIGKILL");
      const killed = await first.done;
      assert.equal(killed.signal, "SIGKILL");
      const before = ran(calls);
      assert.deepEqual(before.map(([what]) => what), ["model-1", "tool"]);

      const resumed = await outcome("recover", id, calls);
      assert.equal(resumed.result.output, "The weather: sunny in Paris");
      assert.deepEqual(resumed.steps.map((s) => s.name), ["model", "tool:get_weather", "model"]);
      const after = ran(calls);
      const firstPid = before[0]![1];
      // The finished model call came from the record; the tool call the kill cut off ran again (at least
      // once, as a step that had not finished), then the second model call.
      assert.deepEqual(after.map(([what]) => what), ["model-1", "tool", "tool", "model-2"]);
      assert.ok(after.slice(2).every(([, pid]) => pid !== firstPid), "the resumed calls ran in the new process");
    });
  }
});

describe("sessions", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  test("a run with a session, killed with SIGKILL inside its tool, resumes with the session the factory makes and writes it once", async () => {
    const { id, calls } = fresh();
    const sessions = mkdtempSync(join(tmpdir(), "timestep-ts-sessions-"));
    const hold = join(dir, `hold-${id}`);
    const first = program("session", id, calls, { HOLD_FILE: hold, SESSION_DIR: sessions }, ["user-42"]);
    await holding(hold);
    first.child.kill("SIGKILL");
    await first.done;
    const resumed = await outcome("recover", id, calls, { SESSION_DIR: sessions });
    assert.equal(resumed.result.output, "The weather: sunny in Paris");
    const names = resumed.steps.map((s) => s.name);
    // Its turn of the session first (one step), then the history read, the calls and the history written.
    assert.deepEqual(names, ["session.join", "session.get_items", "model", "tool:get_weather", "model", "session.add_items"]);
    // The user's message, the tool call, its output and the answer, each once: the history read came from the record.
    const items = JSON.parse(readFileSync(join(sessions, "user-42.json"), "utf8")) as { type?: string; role?: string }[];
    assert.deepEqual(items.map((i) => i.type ?? i.role), ["message", "function_call", "function_call_result", "message"]);
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "tool", "model-2"]);
  });

  test("a second run of the session sees the first one's conversation", async () => {
    const { id, calls } = fresh();
    const sessions = mkdtempSync(join(tmpdir(), "timestep-ts-sessions-"));
    await outcome("session", id, calls, { SESSION_DIR: sessions }, ["user-7"]);
    const again = await outcome("session", `${id}-again`, calls, { SESSION_DIR: sessions }, ["user-7"]);
    // The scripted model answers from a tool output in its input: the second run's input held the first run's.
    assert.equal(again.result.output, "The weather: sunny in Paris");
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-2", "model-2"]);
    const items = JSON.parse(readFileSync(join(sessions, "user-7.json"), "utf8")) as { type?: string; role?: string }[];
    assert.deepEqual(items.map((i) => i.role ?? i.type), ["user", "function_call", "function_call_result", "assistant", "user", "assistant"]);
  });
});

describe("session turns (DatabaseSession)", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  /** The session's items, read by a program of its own executor id (its launch recovers none of the runs). */
  async function history(sessionId: string, calls: string): Promise<{ type?: string; role?: string }[]> {
    const { code, out, err } = await program("history", "-", calls, { TIMESTEP_EXECUTOR_ID: `ts-reader-${process.pid}` }, [sessionId]).done;
    assert.equal(code, 0, err);
    return lastJson<{ items: { type?: string; role?: string }[] }>(out).items;
  }

  /** A run of a new session (a DatabaseSession) started in a program of its own, held inside its tool. */
  async function heldInItsTool() {
    const { id, calls } = fresh();
    const session = `db-${id}`;
    const hold = join(dir, `hold-${id}`);
    const first = program("turn", id, calls, { HOLD_FILE: hold }, [session]);
    await holding(hold);
    return { id, calls, session, hold, first };
  }

  /** Each other program has an executor id of its own: its launch must not recover the held run. */
  const own = (name: string) => ({ TIMESTEP_EXECUTOR_ID: `ts-${name}-${process.pid}-${made}` });

  test("killed with SIGKILL inside its tool, a DatabaseSession run resumes with no factory's help and writes its history once", async () => {
    const { id, calls, session, first } = await heldInItsTool();
    first.child.kill("SIGKILL");
    await first.done;
    const resumed = await outcome("recover", id, calls);
    assert.equal(resumed.result.output, "The weather: sunny in Paris");
    assert.deepEqual(resumed.steps.map((s) => s.name), ["session.join", "session.get_items", "model", "tool:get_weather", "model", "session.add_items"]);
    assert.deepEqual((await history(session, calls)).map((i) => i.role ?? i.type), ["user", "function_call", "function_call_result", "assistant"]);
    // A second run of the session sees the first's tool output in its input: its model answers at once.
    const again = await outcome("turn", `${id}-again`, calls, own("again"), [session]);
    assert.equal(again.result.output, "The weather: sunny in Paris");
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "tool", "model-2", "model-2"]);
  });

  test("while a run of the session is in its tool, `reject` is refused naming it and `enqueue` waits, then runs on its history", async () => {
    const { id, calls, session, hold, first } = await heldInItsTool();

    const refused = await program("turn", `${id}-refused`, calls, own("refused"), [session, "reject"]).done;
    assert.equal(refused.code, 2, refused.err);
    const error = lastJson<{ error: string; message: string }>(refused.out);
    assert.equal(error.error, "SessionBusyError");
    assert.match(error.message, new RegExp(`session_id: .*has an unfinished run, "${id}"`));

    const waiting = program("turn", `${id}-waiting`, calls, own("waiting"), [session, "enqueue"]);
    assert.deepEqual(await firstLine(waiting.child), { joined: true });
    writeFileSync(`${hold}.release`, "");
    for (const run of [first, waiting]) {
      const { code, out, err } = await run.done;
      assert.equal(code, 0, err);
      assert.equal(lastJson<Outcome>(out).result.output, "The weather: sunny in Paris");
    }
    // The waiting run's model came after the first run's end, and saw its tool output.
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-2", "model-2"]);
  });

  test("`interrupt` cancels the session's unfinished run at its next step and goes on with the history so far", async () => {
    const { id, calls, session, hold, first } = await heldInItsTool();
    const newer = program("turn", `${id}-newer`, calls, own("newer"), [session, "interrupt"]);
    assert.deepEqual(await firstLine(newer.child), { joined: true });
    writeFileSync(`${hold}.release`, "");
    const cut = await first.done;
    assert.equal(cut.code, 2, cut.err);
    assert.match(cut.out, /cancel/i);
    const done = await newer.done;
    assert.equal(done.code, 0, done.err);
    assert.equal(lastJson<Outcome>(done.out).result.output, "The weather: sunny in Paris");
    // The cancelled run made no second model call and wrote no history: the newer run started afresh.
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-1", "tool", "model-2"]);
  });
});

describe("schedules", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  test("a schedule's ticks each run the agent once, as workflow <name>@<tick>; listed, then deleted, it fires no more", { timeout: 120_000 }, async () => {
    const { id, calls } = fresh();
    const name = `every-second-${id.replace(/[^A-Za-z0-9_-]/g, "-")}`.slice(0, 100);
    // Two processes serve the same schedule: each tick runs once all the same.
    const first = program("schedule", name, calls, { TIMESTEP_EXECUTOR_ID: `ts-sched-a-${process.pid}` }, ["* * * * * *"]);
    assert.deepEqual(await firstLine(first.child), { name });
    const second = program("schedule", name, calls, { TIMESTEP_EXECUTOR_ID: `ts-sched-b-${process.pid}` }, ["* * * * * *"]);
    assert.deepEqual(await firstLine(second.child), { name });
    for (let i = 0; ran(calls).filter(([what]) => what === "model-2").length < 3; i++) {
      assert.ok(i < 600, "three ticks did not complete within 60 s");
      await sleep(100);
    }
    const { code, out, err } = await program("schedules", name, calls, { TIMESTEP_EXECUTOR_ID: `ts-sched-c-${process.pid}` }).done;
    assert.equal(code, 0, err);
    const answer = lastJson<{ listed: { name: string; crontab: string; agent: string }[]; deleted: boolean; again: boolean }>(out);
    assert.deepEqual(answer.listed.filter((s) => s.name === name).map((s) => [s.crontab, s.agent]), [["* * * * * *", "ts-weather"]]);
    assert.deepEqual([answer.deleted, answer.again], [true, false]);
    // The schedules' loops see the deletion within a second: wait for the runs under way to end, then for nothing new.
    await sleep(3000);
    const settled = ran(calls).length;
    await sleep(3000);
    assert.equal(ran(calls).length, settled, "no tick after the deletion");
    for (const p of [first, second]) p.child.kill("SIGTERM");
    await Promise.all([first.done, second.done]);
    // Each tick's run made its model call, tool call and model call once: the same number of each.
    const kinds = ran(calls).map(([what]) => what);
    const count = (k: string) => kinds.filter((w) => w === k).length;
    assert.ok(count("model-2") >= 3);
    assert.equal(count("model-1"), count("model-2"), kinds.join(","));
    assert.equal(count("tool"), count("model-2"), kinds.join(","));
  });

  test("a bad crontab, a RunState, or a session no tick could make again are refused", async () => {
    const agent = new Agent({ name: "scheduled" });
    await assert.rejects(createScheduledAgentWorkflow("every minute", agent, "hi"), (e: unknown) => e instanceof ValidationError && e.field === "crontab");
    const custom = { getSessionId: async () => "s", getItems: async () => [], addItems: async () => {}, popItem: async () => undefined, clearSession: async () => {} };
    await assert.rejects(createScheduledAgentWorkflow("* * * * *", agent, "hi", custom), (e: unknown) => e instanceof ValidationError && e.field === "session");
  });
});

describe("approvals", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  const APPROVAL = { APPROVAL: "1" };
  /** Another program that decides: an executor id of its own, so its launch recovers none of the runs. */
  async function decide(mode: string, id: string, calls: string, args: string[]) {
    const { code, out, err } = await program(mode, id, calls, { ...APPROVAL, TIMESTEP_EXECUTOR_ID: `ts-approver-${process.pid}` }, args).done;
    return { code, answer: JSON.parse(out.trim().split("\n").at(-1) || "{}") as { sent?: string; error?: string; message?: string }, err };
  }

  test("an interrupted run returns its waiting call; its saved state, approved, goes on in a new run", async () => {
    const { id, calls } = fresh();
    const interrupted = await outcome("run", id, calls, APPROVAL);
    assert.equal(interrupted.result.status, "interrupted");
    assert.deepEqual(interrupted.result.interruptions.map((a) => [a.callId, a.tool, JSON.parse(a.arguments)]), [["call_1", "get_weather", { city: "Paris" }]]);
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1"], "the tool waits for its approval");

    const resumed = await outcome("resume", id, calls, APPROVAL, [`${id}-resumed`]);
    assert.equal(resumed.result.status, "completed");
    assert.equal(resumed.result.output, "The weather: sunny in Paris");
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "tool", "model-2"]);
    assert.deepEqual(resumed.steps.map((s) => s.name), ["tool:get_weather", "model", "DBOS.setEvent"]);
  });

  test("a run waiting for approval survives SIGKILL, and an approval with edited arguments sent from another process resumes it once", async () => {
    const { id, calls } = fresh();
    const first = program("wait", id, calls, APPROVAL);
    const waiting = (await firstLine(first.child)) as { waiting: { callId: string }[] };
    assert.deepEqual(waiting.waiting.map((a) => a.callId), ["call_1"]);
    first.child.kill("SIGKILL");
    assert.equal((await first.done).signal, "SIGKILL");

    // Refused, naming what is wrong: a call the run does not wait on, arguments that are not a JSON object.
    const wrongCall = await decide("approve", id, calls, ["call_9"]);
    assert.equal(wrongCall.code, 2);
    assert.equal(wrongCall.answer.error, "NotWaitingError");
    assert.match(wrongCall.answer.message!, /waits for "call_1", not "call_9"/);
    const badArguments = await decide("approve", id, calls, ["call_1", "Lyon"]);
    assert.equal(badArguments.answer.error, "ValidationError");
    assert.match(badArguments.answer.message!, /^arguments: .* is not a JSON object/);

    const recovering = program("recover", id, calls, APPROVAL);
    const approved = await decide("approve", id, calls, ["call_1", JSON.stringify({ city: "Lyon" })]);
    assert.equal(approved.code, 0, approved.err);
    const { code, out, err } = await recovering.done;
    assert.equal(code, 0, `${out}\n${err}`);
    const resumed = lastJson<Outcome>(out);
    assert.equal(resumed.result.status, "completed");
    assert.equal(resumed.result.output, "The weather: sunny in Lyon");
    // The model's first call came from the record; the tool ran once, after the approval, in the new process.
    const after = ran(calls);
    assert.deepEqual(after.map(([what]) => what), ["model-1", "tool", "model-2"]);
    assert.notEqual(after[1]![1], after[0]![1]);
    const again = await decide("approve", id, calls, ["call_1"]);
    assert.equal(again.answer.error, "NotWaitingError");
    assert.match(again.answer.message!, /has ended/);
  });

  test("a call not decided by its deadline is rejected, and the model is told", async () => {
    const { id, calls } = fresh();
    const waited = await outcome("wait", id, calls, { ...APPROVAL, APPROVAL_TIMEOUT: "1" });
    assert.equal(waited.result.status, "completed");
    assert.match(waited.result.output, /^The weather: No decision came before the approval deadline/);
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "model-2"], "the tool never ran");
  });

  test("a rejection's message reaches the model and the tool does not run", async () => {
    const { id, calls } = fresh();
    const first = program("wait", id, calls, APPROVAL);
    await firstLine(first.child);
    const rejected = await decide("reject", id, calls, ["call_1", "not in Paris"]);
    assert.equal(rejected.code, 0, rejected.err);
    const { code, out, err } = await first.done;
    assert.equal(code, 0, `${out}\n${err}`);
    const done = lastJson<Outcome>(out);
    assert.equal(done.result.output, "The weather: not in Paris");
    assert.deepEqual(ran(calls).map(([what]) => what), ["model-1", "model-2"]);
  });
});

describe("bad input gets an error that names the field and the fix", () => {
  test("no PG_CONNECTION_URI, a database that is not PostgreSQL, a bad OpenAI API or pool size", () => {
    const saved = process.env.PG_CONNECTION_URI;
    delete process.env.PG_CONNECTION_URI;
    try {
      assert.throws(() => configureDBOS(), (e: unknown) => e instanceof ValidationError && e.field === "PG_CONNECTION_URI" && /PostgreSQL only/.test(e.message));
      assert.throws(
        () => configureDBOS({ systemDatabaseUrl: "sqlite:///tmp/x.sqlite" }),
        (e: unknown) => e instanceof ValidationError && e.field === "systemDatabaseUrl" && /postgresql:\/\//.test(e.message),
      );
      process.env.TIMESTEP_OPENAI_API = "completions";
      assert.throws(
        () => configureDBOS({ systemDatabaseUrl: "postgresql://postgres@127.0.0.1:5432/x" }),
        (e: unknown) => e instanceof ValidationError && e.field === "TIMESTEP_OPENAI_API" && /chat_completions/.test(e.message),
      );
      delete process.env.TIMESTEP_OPENAI_API;
      for (const size of ["lots", "2"]) {  // DBOS, the runtime's tables and DBOS's client need one each
        process.env.TIMESTEP_DB_POOL_SIZE = size;
        assert.throws(
          () => configureDBOS({ systemDatabaseUrl: "postgresql://postgres@127.0.0.1:5432/x" }),
          (e: unknown) => e instanceof ValidationError && e.field === "TIMESTEP_DB_POOL_SIZE" && /from 3 to 1000/.test(e.message),
        );
      }
      assert.deepEqual([3, 6, 20].map(poolShares), [
        { dbos: 1, tables: 1, client: 1 }, { dbos: 4, tables: 1, client: 1 }, { dbos: 14, tables: 5, client: 1 },
      ]);
    } finally {
      if (saved !== undefined) process.env.PG_CONNECTION_URI = saved;
      delete process.env.TIMESTEP_DB_POOL_SIZE;
    }
  });

  test("a session, streaming, a bad workflow id or turn count are refused before anything runs", async () => {
    const agent = new Agent({ name: "refused" });
    const refused = async (field: string, run: () => Promise<unknown>) =>
      assert.rejects(run, (e: unknown) => e instanceof ValidationError && e.field === field);
    await refused("session", () => runAgentWorkflow(agent, "hi", { id: "s" }));  // not a Session
    await refused("stream", () => runAgentWorkflow(agent, "hi", undefined, true));
    await refused("timeoutSeconds", () => runAgentWorkflow(agent, "hi", undefined, false, -1));
    await refused("maxTurns", () => runAgentWorkflow(agent, "hi", undefined, false, undefined, 0));
    await refused("workflowId", () => runAgentWorkflow(agent, "hi", undefined, false, undefined, undefined, undefined, "a\u0000b"));
    await refused("inputItems", () => runAgentWorkflow(agent, 42 as unknown as string));
    const options = (o: object) => () => runAgentWorkflow(agent, "hi", undefined, false, undefined, undefined, undefined, undefined, o);
    await refused("options.approvalTimeoutSeconds", options({ approvalTimeoutSeconds: 5 }));
    await refused("options.approvalTimeoutSeconds", options({ waitForApproval: true, approvalTimeoutSeconds: -1 }));
    await refused("options.waitForApprovel", options({ waitForApprovel: true }));
    await refused("options.sessionPolicy", options({ sessionPolicy: "enqueue" }));  // no session
    await refused("options.sessionPolicy", () =>
      runAgentWorkflow(agent, "hi", new DatabaseSession("s"), false, undefined, undefined, undefined, undefined, { sessionPolicy: "later" as "enqueue" }));
    assert.throws(() => new DatabaseSession(""), (e: unknown) => e instanceof ValidationError && e.field === "sessionId");
  });
});
