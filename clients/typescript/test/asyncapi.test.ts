// subjects/asyncapi.json against the official AsyncAPI 3.0.0 JSON Schema (@asyncapi/specs), and the
// client's run requests against the document's own payload schemas.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import specs from "@asyncapi/specs";
import { Ajv } from "ajv";
import { buildRunRequest } from "../src/index.js";

const document: Record<string, any> = JSON.parse(readFileSync(new URL("../../../../subjects/asyncapi.json", import.meta.url), "utf8"));

// The spec bundles its own copy of the draft-07 meta-schema, which clashes with Ajv's built-in one.
const validateDocument = new Ajv({ meta: false, validateSchema: false, strict: false, allErrors: true }).compile(specs.schemas["3.0.0"]);

test("subjects/asyncapi.json is a valid AsyncAPI 3.0.0 document", () => {
  assert.equal(document.asyncapi, "3.0.0");
  const valid = validateDocument(document);
  assert.ok(valid, JSON.stringify(validateDocument.errors?.slice(0, 5), null, 2));

  // The check can fail: a document with an action AsyncAPI 3 does not have is refused.
  const broken = structuredClone(document) as Record<string, any>;
  broken.operations.submitRun.action = "publish";
  assert.equal(validateDocument(broken), false);
});

test("the client's run requests match the document's RunRequest schema", () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ components: document.components }, "asyncapi");
  const validRequest = ajv.compile({ $ref: "asyncapi#/components/schemas/RunRequest" });
  const full = buildRunRequest({
    agent: "assistant",
    input: [{ role: "user", content: "Summarise the inbox" }],
    id: "report-42",
    sessionId: "user-7",
    sessionPolicy: "enqueue",
    queue: "openai",
    priority: 2,
    deduplicationId: "user-7-summary",
    timeoutSeconds: 300,
    stream: true,
    metadata: { team: "support" },
    maxTokens: 4000,
    modelRetry: { maxAttempts: 3, maxWaitSeconds: 120 },
    approvalTimeoutSeconds: 3600,
    context: { customer: "acme", tier: 2 },
  });
  assert.deepEqual(Object.keys(full).sort(), Object.keys(document.components.schemas.RunRequest.properties).sort());
  assert.ok(validRequest(full), JSON.stringify(validRequest.errors));
  assert.ok(validRequest(buildRunRequest({ agent: "assistant", input: "Hello" })));
  assert.equal(validRequest({ ...full, priority: "high" }), false);
  assert.equal(validRequest({ ...full, id: "a.b" }), false);
});
