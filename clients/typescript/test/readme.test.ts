// The README's example, run as written with node, against the test actors (their agent in place of
// the demo's: the demo agent is the same tools with other texts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";

const URL = process.env.TIMESTEP_TEST_NATS_URL;

test("the README's example runs", { timeout: 60_000 }, async () => {
  assert.ok(URL, "TIMESTEP_TEST_NATS_URL is not set: run these tests through tests/test_typescript.py");
  const readme = readFileSync(new globalThis.URL("../../README.md", import.meta.url), "utf8");
  const example = /## Example[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(example, "no ```js block under ## Example in README.md");
  // Inside the package, so `import "@timestep/client"` resolves to it (a package may import itself by name).
  const script = new globalThis.URL("../readme-example.mjs", import.meta.url);
  writeFileSync(script, example.replaceAll('"demo-assistant"', '"bus-assistant"'));
  const { stdout } = await promisify(execFile)(process.execPath, [script.pathname], {
    env: { ...process.env, NATS_URL: URL },
    timeout: 50_000,
  });
  assert.deepEqual(stdout.trim().split("\n"), [
    "1 accepted",
    "2 started",
    "3 tool_call",
    "4 tool_output",
    "5 completed",
    "get_weather returned: sunny in Paris",
    "send_email returned: sent to ada@example.com",
  ]);
});
