/**
 * Queued runs on a real PostgreSQL, DBOS launched in this test's own Node process: a queue with one run at a
 * time starts its runs by priority, a deduplication id still queued or running is refused (or its run's handle
 * returned), and bad queue settings are refused naming the field.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Agent, Usage, tool, type Model, type ModelRequest, type ModelResponse, type StreamEvent } from "@openai/agents";
import { z } from "zod";

import {
  DuplicateRunError, ValidationError, configureDBOS, configureQueue, ensureDBOSLaunched, queueAgentWorkflow, registerAgent, shutdownDBOS,
} from "../src/index.js";

const DATABASE = process.env.TIMESTEP_TEST_PG_URL;

/** Calls `note` with the run's text, then answers with it. */
class EchoModel implements Model {
  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const items = Array.isArray(request.input) ? request.input : [{ role: "user", content: request.input }];
    const done = items.find((i) => (i as { type?: string }).type === "function_call_result");
    const usage = new Usage({ requests: 1, inputTokens: 1, outputTokens: 1, totalTokens: 2 });
    if (done) return { usage, output: [{ type: "message", role: "assistant", status: "completed", content: [{ type: "output_text", text: "noted" }] }] };
    const text = JSON.stringify(items).match(/run-[a-z0-9-]+/)?.[0] ?? "?";
    return { usage, output: [{ type: "function_call", callId: `call-${text}`, name: "note", arguments: JSON.stringify({ text }), status: "completed" }] };
  }

  // eslint-disable-next-line require-yield
  async *getStreamedResponse(): AsyncIterable<StreamEvent> {
    throw new Error("not streamed");
  }
}

const started: string[] = [];
let release: () => void = () => {};
let held = new Promise<void>((resolve) => (release = resolve));
const note = tool({
  name: "note",
  description: "Note a run",
  parameters: z.object({ text: z.string() }),
  execute: async ({ text }) => {
    started.push(text);
    if (text === "run-blocker") await held;
    return "ok";
  },
});
const agent = registerAgent(new Agent({ name: "ts-queued", instructions: "Note the run.", model: new EchoModel(), tools: [note] }));

describe("queueAgentWorkflow", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  before(async () => {
    process.env.TIMESTEP_EXECUTOR_ID = `ts-queue-test-${process.pid}`;
    configureDBOS({ systemDatabaseUrl: DATABASE });
    await ensureDBOSLaunched();
  });
  after(async () => {
    release();
    await shutdownDBOS();
  });

  test("a queue that runs one at a time starts the waiting runs by priority, those without one last", { timeout: 120_000 }, async () => {
    const queue = `one-${process.pid}`;
    await configureQueue(queue, { concurrency: 1 });
    const blocker = await queueAgentWorkflow(agent, "run-blocker", undefined, false, queue);
    while (!started.includes("run-blocker")) await new Promise((r) => setTimeout(r, 50));
    // Queued while the blocker holds the queue's one place.
    const handles = [
      await queueAgentWorkflow(agent, "run-none", undefined, false, queue),
      await queueAgentWorkflow(agent, "run-three", undefined, false, queue, 3),
      await queueAgentWorkflow(agent, "run-one", undefined, false, queue, 1),
      await queueAgentWorkflow(agent, "run-two", undefined, false, queue, 2),
    ];
    assert.deepEqual(await Promise.all(handles.map((h) => h.getStatus())), ["queued", "queued", "queued", "queued"]);
    release();
    assert.equal((await blocker.getResult()).output, "noted");
    for (const h of handles) assert.equal((await h.getResult()).status, "completed");
    assert.deepEqual(started, ["run-blocker", "run-one", "run-two", "run-three", "run-none"]);
  });

  test("a deduplication id still queued or running is refused, or gives the run's handle", { timeout: 120_000 }, async () => {
    const queue = `dedup-${process.pid}`;
    await configureQueue(queue, { concurrency: 1 });
    held = new Promise<void>((resolve) => (release = resolve));
    started.splice(0);
    const first = await queueAgentWorkflow(agent, "run-blocker", undefined, false, queue, undefined, "user-42-summary");
    await assert.rejects(
      queueAgentWorkflow(agent, "run-again", undefined, false, queue, undefined, "user-42-summary"),
      (e: unknown) => e instanceof DuplicateRunError && e.workflowId === first.workflowId && /still queued or running/.test(e.message),
    );
    const same = await queueAgentWorkflow(agent, "run-again", undefined, false, queue, undefined, "user-42-summary", undefined, undefined, { onDuplicate: "return" });
    assert.equal(same.workflowId, first.workflowId);
    release();
    await first.getResult();
    // Once the first has ended, the id is free again.
    const later = await queueAgentWorkflow(agent, "run-later", undefined, false, queue, undefined, "user-42-summary");
    assert.equal((await later.getResult()).status, "completed");
    assert.deepEqual(started, ["run-blocker", "run-later"]);
  });

  test("bad queue names, priorities and settings are refused naming the field", async () => {
    const refused = async (field: string, call: () => Promise<unknown>) =>
      assert.rejects(call, (e: unknown) => e instanceof ValidationError && e.field === field);
    await refused("queueName", () => queueAgentWorkflow(agent, "x", undefined, false, "no spaces"));
    await refused("priority", () => queueAgentWorkflow(agent, "x", undefined, false, undefined, 0));
    await refused("priority", () => queueAgentWorkflow(agent, "x", undefined, false, undefined, 1.5));
    await refused("deduplicationId", () => queueAgentWorkflow(agent, "x", undefined, false, undefined, undefined, ""));
    await refused("options.onDuplicate", () => queueAgentWorkflow(agent, "x", undefined, false, undefined, undefined, "d", undefined, undefined, { onDuplicate: "skip" as "error" }));
    await refused("policy.limit", () => configureQueue("q", { limit: 0, periodSeconds: 60 }));
    await refused("policy.periodSeconds", () => configureQueue("q", { limit: 5 }));
    await refused("policy.concurency", () => configureQueue("q", { concurency: 2 } as object));
  });
});
