/**
 * The README's examples as a user copies them: each ```ts block is compiled with the package's TypeScript,
 * and the quick start runs as written, its model calls going through the real `openai` client over HTTP to
 * a scripted Responses API server on this machine (OPENAI_BASE_URL), its run stored in the test database.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const DATABASE = process.env.TIMESTEP_TEST_PG_URL;
const PACKAGE = fileURLToPath(new URL("../../", import.meta.url));
const run = promisify(execFile);

function blocks(): string[] {
  const readme = readFileSync(`${PACKAGE}README.md`, "utf8");
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

const IMPORT = /^import \{([^}]*)\} from "([^"]+)";\n/gm;

/** `first` then `then`, as one module: the named imports of both, once each, at the top. */
function joined(first: string, then: string): string {
  const names = new Map<string, Set<string>>();
  const body = (code: string) =>
    code.replace(IMPORT, (_, list: string, from: string) => {
      const known = names.get(from) ?? new Set<string>();
      for (const name of list.split(",").map((n) => n.trim()).filter(Boolean)) known.add(name);
      names.set(from, known);
      return "";
    });
  const rest = `${body(first)}\n${body(then)}`;
  return [...names].map(([from, list]) => `import { ${[...list].join(", ")} } from "${from}";`).join("\n") + "\n" + rest;
}

/** A Responses API of two turns: a call of `get_weather` for the city the user named, then an answer with its output. */
function responsesServer(requests: string[]) {
  const answer = (body: Record<string, unknown>) => {
    const input = (body.input as { type?: string; output?: unknown }[]) ?? [];
    const result = input.find((i) => i.type === "function_call_output");
    const output = result
      ? [{ type: "message", id: "msg_1", role: "assistant", status: "completed", content: [{ type: "output_text", text: `It is ${String(result.output)}.`, annotations: [] }] }]
      : [{ type: "function_call", id: "fc_1", call_id: "call_1", name: "get_weather", arguments: JSON.stringify({ city: "Paris" }), status: "completed" }];
    return {
      id: `resp_${requests.length}`, object: "response", created_at: Math.floor(Date.now() / 1000), model: body.model, status: "completed",
      output, parallel_tool_calls: true, tool_choice: "auto", tools: [],
      usage: { input_tokens: 10, output_tokens: 5, total_tokens: 15, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } },
    };
  };
  /** The same two turns as the Chat Completions API answers them (TIMESTEP_OPENAI_API=chat_completions). */
  const chat = (body: Record<string, unknown>) => {
    const messages = (body.messages as { role?: string; content?: unknown }[]) ?? [];
    const result = messages.find((m) => m.role === "tool");
    const message = result
      ? { role: "assistant", content: `It is ${String(result.content)}.` }
      : { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: JSON.stringify({ city: "Paris" }) } }] };
    return {
      id: `chatcmpl_${requests.length}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model: body.model,
      choices: [{ index: 0, message, finish_reason: result ? "stop" : "tool_calls" }],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    };
  };
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    let data = "";
    req.on("data", (d) => (data += d));
    req.on("end", () => {
      requests.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      res.setHeader("content-type", "application/json");
      const body = JSON.parse(data || "{}");
      res.end(JSON.stringify(req.url?.endsWith("/chat/completions") ? chat(body) : answer(body)));
    });
  });
}

test("every ```ts block of the README compiles, and the quick start runs as written", { skip: DATABASE ? false : "TIMESTEP_TEST_PG_URL is not set", timeout: 120_000 }, async () => {
  const examples = blocks();
  assert.ok(examples.length >= 3, `expected the quick start and the approval examples, found ${examples.length} blocks`);
  // Inside the package, so `import "@timestep/runtime"` resolves to it (a package may import itself by name).
  const dir = `${PACKAGE}dist/readme/`;
  mkdirSync(dir, { recursive: true });
  const files = examples.map((code, i) => {
    const file = `${dir}example-${i + 1}.ts`;
    // The later blocks go on from the first (its agent): each is compiled after it, their imports merged.
    // The quick start's workflow id made this test run's own: the same id again would return the stored result.
    const own = code.replaceAll('"my-workflow-1"', `"readme-${process.pid}-${Date.now()}"`);
    writeFileSync(file, i === 0 ? own : joined(examples[0]!, code));
    return file;
  });
  const tsc = `${PACKAGE}node_modules/typescript/bin/tsc`;
  const compiled = await run(process.execPath, [
    tsc, "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--strict", "--skipLibCheck",
    "--types", "node", "--rootDir", dir, "--outDir", `${dir}out`, ...files,
  ], { cwd: PACKAGE }).catch((e: { stdout: string; stderr: string }) => assert.fail(`the README's examples do not compile:\n${e.stdout}${e.stderr}`));
  assert.equal(compiled.stderr, "");


  const requests: string[] = [];
  const server = responsesServer(requests);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const { stdout } = await run(process.execPath, [`${dir}out/example-1.js`], {
      cwd: PACKAGE, timeout: 60_000,
      env: {
        ...process.env, PG_CONNECTION_URI: DATABASE, OPENAI_API_KEY: "sk-readme-test", OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
        TIMESTEP_EXECUTOR_ID: `ts-readme-${process.pid}`,
      },
    });
    assert.equal(stdout.trim(), "It is sunny in Paris.");
    assert.deepEqual(requests, ["POST /v1/responses Bearer sk-readme-test", "POST /v1/responses Bearer sk-readme-test"]);

    // The same program against a server with only the Chat Completions API (Ollama, vLLM): one setting.
    requests.splice(0);
    writeFileSync(files[0]!, examples[0]!.replaceAll('"my-workflow-1"', `"readme-chat-${process.pid}-${Date.now()}"`));
    await run(process.execPath, [
      tsc, "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--strict", "--skipLibCheck",
      "--types", "node", "--rootDir", dir, "--outDir", `${dir}out`, files[0]!,
    ], { cwd: PACKAGE });
    const chat = await run(process.execPath, [`${dir}out/example-1.js`], {
      cwd: PACKAGE, timeout: 60_000,
      env: {
        ...process.env, PG_CONNECTION_URI: DATABASE, OPENAI_API_KEY: "sk-readme-test", OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
        TIMESTEP_EXECUTOR_ID: `ts-readme-${process.pid}`, TIMESTEP_OPENAI_API: "chat_completions",
      },
    });
    assert.equal(chat.stdout.trim(), "It is sunny in Paris.");
    assert.deepEqual(requests, ["POST /v1/chat/completions Bearer sk-readme-test", "POST /v1/chat/completions Bearer sk-readme-test"]);
  } finally {
    server.close();
  }
});
