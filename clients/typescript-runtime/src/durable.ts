/** Model calls, tool calls and agents made durable: each call a recorded step. */

import { DBOS } from "@dbos-inc/dbos-sdk";
import {
  Agent, Usage,
  type FunctionTool, type Model, type ModelProvider, type ModelRequest, type ModelResponse, type StreamEvent, type Tool,
} from "@openai/agents";

import { ValidationError } from "./errors.js";
import { asText, eventsOfThisRun, publishLive, type RunEvents } from "./events.js";
import { runRetryPolicy, spend } from "./limits.js";
import { ModelCallError, failureOf, nextWait, type Failure } from "./modelRetry.js";

/** A model response as the record keeps it: plain JSON, its usage rebuilt on the way back. */
type RecordedResponse = Omit<ModelResponse, "usage"> & { usage: ConstructorParameters<typeof Usage>[0] };

function recorded(response: ModelResponse): RecordedResponse {
  const { usage, ...rest } = response;
  return JSON.parse(JSON.stringify({
    ...rest,
    usage: {
      requests: usage.requests, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, totalTokens: usage.totalTokens,
      inputTokensDetails: usage.inputTokensDetails, outputTokensDetails: usage.outputTokensDetails,
    },
  }));
}

/** The attempts of one model call: what a failed one decides inside its step (recorded with it, so a replay
 * makes the same attempts and waits the same), and the durable wait before the next. */
class Attempts {
  private readonly policy = runRetryPolicy();
  private attempt = 1;
  private waited = 0;

  /** In the attempt's step: `e` as a recorded failure with the wait before the next attempt (null: none), its
   * `retrying` event (number `seq`) published for a bus run; rethrown when it is not a provider's error. */
  async failed(e: unknown, events: RunEvents | undefined, seq: number): Promise<Failure> {
    const failed = failureOf(e);
    if (!failed) throw e;
    const delay = nextWait(failed, this.attempt, this.waited, this.policy);
    if (delay !== null && events) {
      await events.emit(seq, "retrying", {
        attempt: this.attempt, delay_seconds: Math.round(delay * 1000) / 1000, retry_at: new Date(Date.now() + delay * 1000).toISOString(),
        error: { type: failed.providerError, message: failed.message }, status_code: failed.status,
      });
    }
    return { ...failed, delay };
  }

  /** After a failed attempt's step: the run's error when none is left, else the wait (durable: after a crash only
   * what is left is waited). */
  async next(outcome: Failure): Promise<void> {
    if (outcome.delay === null) throw new ModelCallError(outcome.providerError, outcome.status, outcome.message, this.attempt, outcome.headers);
    await DBOS.sleep(outcome.delay * 1000);
    this.attempt += 1;
    this.waited += outcome.delay;
  }
}

/** Each call of `inner` is the step `model` of the run: recorded before the run goes on, and on
 * recovery returned from the record without calling the model again. */
class DurableModel implements Model {
  constructor(private readonly inner: Model) {}

  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const events = eventsOfThisRun();
    const attempts = new Attempts();
    for (;;) {
      const base = events?.seq ?? 0;
      // Each attempt is its own step and records its failure as a value, with the decision to retry (and, for a
      // bus run, its `retrying` event, stored with it): a replay makes the same attempts and waits the same.
      const outcome = await DBOS.runStep(async (): Promise<RecordedResponse | Failure> => {
        try {
          return recorded(await this.inner.getResponse(request));
        } catch (e) {
          return attempts.failed(e, events, base + 1);
        }
      }, { name: "model" });
      if (!("failed" in outcome)) {
        spend(outcome.usage?.totalTokens ?? 0);  // over the run's budget: the run stops here, with this call recorded
        return { ...outcome, usage: new Usage(outcome.usage) };
      }
      if (events && outcome.delay !== null) events.seq = base + 1;  // its `retrying` event
      await attempts.next(outcome);
    }
  }

  /** A streamed call (a bus run asked with `stream`) is the step `model` too: each text delta is published live
   * (core NATS, `<prefix>.runs.live.<run_id>`) and stored as a `delta` event before the next is read, and the
   * step records the final response and the number of deltas, so a replay numbers the run's events the same
   * and yields the recorded response without calling the model. A call that fails for a passing reason is
   * retried as an unstreamed one is: each attempt its own step (the deltas it streamed before it failed stay
   * published), its `retrying` event stored with it, each wait a DBOS sleep. */
  async *getStreamedResponse(request: ModelRequest): AsyncIterable<StreamEvent> {
    const events = eventsOfThisRun();
    if (!events) throw new ValidationError("stream", "streaming is built for runs from the bus only", "run with stream false");
    const attempts = new Attempts();
    for (;;) {
      const base = events.seq;
      const call = ++events.calls;
      const outcome = await DBOS.runStep(async (): Promise<{ response: unknown; deltas: number } | (Failure & { deltas: number })> => {
        let deltas = 0;
        let offset = 0;
        let final: unknown;
        try {
          for await (const event of this.inner.getStreamedResponse(request)) {
            if (event.type === "output_text_delta" && event.delta) {
              await publishLive({ run_id: events.runId, call, offset, text: event.delta, time: new Date().toISOString() });
              offset += event.delta.length;
              deltas += 1;
              await events.emit(base + deltas, "delta", { text: event.delta });
            } else if (event.type === "response_done") {
              final = event.response;
            }
          }
        } catch (e) {
          return { ...(await attempts.failed(e, events, base + deltas + 1)), deltas };
        }
        if (final === undefined) throw new Error("the model's stream ended without its response");
        return { response: JSON.parse(JSON.stringify(final)), deltas };
      }, { name: "model" });
      events.seq = base + outcome.deltas;
      if (!("failed" in outcome)) {
        spend((outcome.response as { usage?: { totalTokens?: number } }).usage?.totalTokens ?? 0);
        yield { type: "response_done", response: outcome.response } as StreamEvent;
        return;
      }
      if (outcome.delay !== null) events.seq += 1;  // its `retrying` event
      await attempts.next(outcome);
    }
  }
}

/** Models named by a string resolve with `base` (the OpenAI provider) and are made durable. */
export class DurableModelProvider implements ModelProvider {
  constructor(private readonly base: ModelProvider) {}

  async getModel(modelName?: string): Promise<Model> {
    return new DurableModel(await this.base.getModel(modelName));
  }
}

/** A function tool whose each call is the step `tool:<name>`: on recovery a finished call's output
 * comes from the record and the tool does not run again. Hosted tools run at the provider, inside
 * the model call's step. */
function durableTool(tool: Tool<any>): Tool<any> {
  if (tool.type !== "function") return tool;
  const inner = tool as FunctionTool<any, any, any>;
  return {
    ...inner,
    invoke: (context, input, details) => {
      // A bus run's `tool_call` and `tool_output` are published inside the step, so both are stored
      // before the step is recorded; a replay publishes them again, stored once (their message ids).
      const events = eventsOfThisRun();
      const seq = events?.take(2) ?? 0;
      const callId = details?.toolCall?.callId ?? "";
      return DBOS.runStep(async () => {
        await events?.emit(seq, "tool_call", { tool: inner.name, call_id: callId, arguments: input });
        const output = await inner.invoke(context, input, details);
        await events?.emit(seq + 1, "tool_output", { call_id: callId, output: asText(output) });
        return output;
      }, { name: `tool:${inner.name}` });
    },
  };
}

/** `agent` with its model, its tools and the agents it hands off to made durable. */
export function durableAgent(agent: Agent<any, any>, made = new Map<Agent<any, any>, Agent<any, any>>()): Agent<any, any> {
  const known = made.get(agent);
  if (known) return known;
  const model = agent.model;
  const durable = agent.clone({ tools: agent.tools.map(durableTool) });
  made.set(agent, durable);
  if (typeof model !== "string") durable.model = new DurableModel(model);
  durable.handoffs = agent.handoffs.map((h) => (h instanceof Agent ? durableAgent(h, made) : h));
  return durable;
}

