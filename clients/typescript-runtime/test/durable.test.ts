/**
 * Durable runs of a TypeScript agent on a real PostgreSQL: each test's program is its own Node process
 * (fixtures/weather.ts), killed with SIGKILL where a test says so. TIMESTEP_TEST_PG_URL names an
 * empty database for these tests (the Python suite's tests/test_typescript_runtime.py makes one).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { Agent } from "@openai/agents";

import { ValidationError, configureDBOS, runAgentWorkflow } from "../src/index.js";

const DATABASE = process.env.TIMESTEP_TEST_PG_URL;
const PROGRAM = fileURLToPath(new URL("../fixtures/weather.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "timestep-ts-runtime-"));
let made = 0;
const children = new Set<ReturnType<typeof spawn>>();

after(() => {
  for (const child of children) child.kill("SIGKILL");
});

interface Outcome {
  result: { workflowId: string; status: string; output: string; usage: { requests: number } };
  steps: { number: number; name: string }[];
  status: string;
}

/** One run of the program: `mode` (`run` or `recover`) on workflow `id`, with `calls` counting what ran. */
function program(mode: string, id: string, calls: string, extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, [PROGRAM, mode, id], {
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

async function outcome(mode: string, id: string, calls: string): Promise<Outcome> {
  const { code, out, err } = await program(mode, id, calls).done;
  assert.equal(code, 0, `node weather.js ${mode} ${id} exited ${code}:\n${out}\n${err}`);
  return JSON.parse(out.trim().split("\n").at(-1)!) as Outcome;
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

  test("killed with SIGKILL inside its tool, the run resumes in a new process without calling the model again", async () => {
    const { id, calls } = fresh();
    const hold = join(dir, `hold-${id}`);
    const first = program("run", id, calls, { HOLD_FILE: hold });
    for (let i = 0; !existsSync(hold); i++) {
      assert.ok(i < 600, "the tool did not start within 60 s");
      await sleep(100);
    }
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
});

describe("bad input gets an error that names the field and the fix", () => {
  test("no PG_CONNECTION_URI, a database that is not PostgreSQL, a bad pool size", () => {
    const saved = process.env.PG_CONNECTION_URI;
    delete process.env.PG_CONNECTION_URI;
    try {
      assert.throws(() => configureDBOS(), (e: unknown) => e instanceof ValidationError && e.field === "PG_CONNECTION_URI" && /PostgreSQL only/.test(e.message));
      assert.throws(
        () => configureDBOS({ systemDatabaseUrl: "sqlite:///tmp/x.sqlite" }),
        (e: unknown) => e instanceof ValidationError && e.field === "systemDatabaseUrl" && /postgresql:\/\//.test(e.message),
      );
      process.env.TIMESTEP_DB_POOL_SIZE = "lots";
      assert.throws(
        () => configureDBOS({ systemDatabaseUrl: "postgresql://postgres@127.0.0.1:5432/x" }),
        (e: unknown) => e instanceof ValidationError && e.field === "TIMESTEP_DB_POOL_SIZE",
      );
    } finally {
      if (saved !== undefined) process.env.PG_CONNECTION_URI = saved;
      delete process.env.TIMESTEP_DB_POOL_SIZE;
    }
  });

  test("a session, streaming, a bad workflow id or turn count are refused before anything runs", async () => {
    const agent = new Agent({ name: "refused" });
    const refused = async (field: string, run: () => Promise<unknown>) =>
      assert.rejects(run, (e: unknown) => e instanceof ValidationError && e.field === field);
    await refused("session", () => runAgentWorkflow(agent, "hi", { id: "s" }));
    await refused("stream", () => runAgentWorkflow(agent, "hi", undefined, true));
    await refused("timeoutSeconds", () => runAgentWorkflow(agent, "hi", undefined, false, -1));
    await refused("maxTurns", () => runAgentWorkflow(agent, "hi", undefined, false, undefined, 0));
    await refused("workflowId", () => runAgentWorkflow(agent, "hi", undefined, false, undefined, undefined, undefined, "a\u0000b"));
    await refused("inputItems", () => runAgentWorkflow(agent, 42 as unknown as string));
  });
});
