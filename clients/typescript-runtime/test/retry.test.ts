/**
 * Failed model calls retried durably, as on the Python side: the agent names its model ("gpt-4.1"), so its calls go
 * through the real `openai` client over HTTP to a scripted Responses API server here (OPENAI_BASE_URL), which
 * fails the calls a test tells it to. DBOS is launched in this test's process on the test database.
 */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { Agent, tool } from "@openai/agents";
import { z } from "zod";

import { ModelCallError, RunHandle, configureDBOS, ensureDBOSLaunched, registerAgent, runAgentWorkflow, shutdownDBOS } from "../src/index.js";

const DATABASE = process.env.TIMESTEP_TEST_PG_URL;

/** What the next requests get: a status with headers (a failure), or, when none is left, the scripted answer. */
const failures: { status: number; headers?: Record<string, string> }[] = [];
const requests: string[] = [];

function answer(body: { input?: { type?: string; output?: unknown }[]; model?: string }) {
  const result = (body.input ?? []).find((i) => i.type === "function_call_output");
  const output = result
    ? [{ type: "message", id: "msg_1", role: "assistant", status: "completed", content: [{ type: "output_text", text: `It is ${String(result.output)}.`, annotations: [] }] }]
    : [{ type: "function_call", id: "fc_1", call_id: "call_1", name: "get_weather", arguments: JSON.stringify({ city: "Paris" }), status: "completed" }];
  return {
    id: `resp_${requests.length}`, object: "response", created_at: 0, model: body.model, status: "completed", output,
    usage: { input_tokens: 10, output_tokens: 5, total_tokens: 15, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } },
  };
}

const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  let data = "";
  req.on("data", (d) => (data += d));
  req.on("end", () => {
    const failure = failures.shift();
    requests.push(String(failure?.status ?? 200));
    res.setHeader("content-type", "application/json");
    if (failure) {
      res.writeHead(failure.status, failure.headers ?? {});
      res.end(JSON.stringify({ error: { message: `scripted ${failure.status}`, type: "scripted", code: null, param: null } }));
      return;
    }
    res.end(JSON.stringify(answer(JSON.parse(data || "{}"))));
  });
});

const getWeather = tool({ name: "get_weather", description: "The weather", parameters: z.object({ city: z.string() }), execute: async ({ city }) => `sunny in ${city}` });
const agent = registerAgent(new Agent({ name: "ts-retried", instructions: "Answer.", model: "gpt-4.1", tools: [getWeather] }));

describe("model calls that fail for a passing reason", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set" }, () => {
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    process.env.OPENAI_BASE_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    process.env.OPENAI_API_KEY = "sk-retry-test";
    process.env.TIMESTEP_EXECUTOR_ID = `ts-retry-test-${process.pid}`;
    process.env.TIMESTEP_MODEL_BACKOFF_SECONDS = "0.1";
    configureDBOS({ systemDatabaseUrl: DATABASE });
    await ensureDBOSLaunched();
  });
  after(async () => {
    await shutdownDBOS();
    server.close();
  });

  test("a 429 is waited out as the provider asks, durably, and the run completes", async () => {
    requests.splice(0);
    failures.push({ status: 429, headers: { "retry-after-ms": "300" } });
    const id = `ts-retry-429-${process.pid}-${Date.now()}`;
    const result = await runAgentWorkflow(agent, "Weather in Paris?", undefined, false, undefined, undefined, undefined, id);
    assert.equal(result.output, "It is sunny in Paris.");
    assert.deepEqual(requests, ["429", "200", "200"], "the openai client's own retries are off: each attempt is a step");
    const steps = (await new RunHandle(id).steps()).map((s) => s.name);
    assert.deepEqual(steps, ["model", "DBOS.sleep", "model", "tool:get_weather", "model"]);
  });

  test("a 400 is not retried: the run fails with the provider's error class and status", async () => {
    requests.splice(0);
    failures.push({ status: 400 });
    await assert.rejects(
      runAgentWorkflow(agent, "Weather in Paris?"),
      (e: unknown) => (e as Error).name === "BadRequestError" && (e as ModelCallError).status === 400 && /after 1 attempt/.test((e as Error).message),
    );
    assert.deepEqual(requests, ["400"]);
  });

  test("TIMESTEP_MODEL_MAX_ATTEMPTS bounds the attempts of a call that keeps failing", async () => {
    requests.splice(0);
    process.env.TIMESTEP_MODEL_MAX_ATTEMPTS = "2";
    failures.push({ status: 503 }, { status: 503 }, { status: 503 });
    try {
      await assert.rejects(
        runAgentWorkflow(agent, "Weather in Paris?"),
        (e: unknown) => (e as Error).name === "InternalServerError" && /after 2 attempts/.test((e as Error).message),
      );
      assert.deepEqual(requests, ["503", "503"]);
    } finally {
      delete process.env.TIMESTEP_MODEL_MAX_ATTEMPTS;
      failures.splice(0);
    }
  });
});

test("a bad retry setting is refused at configureDBOS, naming it", () => {
  process.env.TIMESTEP_MODEL_MAX_ATTEMPTS = "0";
  try {
    assert.throws(() => configureDBOS({ systemDatabaseUrl: "postgresql://postgres@127.0.0.1:5432/x", name: "other-app" }), (e: unknown) => (e as { field?: string }).field === "TIMESTEP_MODEL_MAX_ATTEMPTS");
  } finally {
    delete process.env.TIMESTEP_MODEL_MAX_ATTEMPTS;
  }
});
