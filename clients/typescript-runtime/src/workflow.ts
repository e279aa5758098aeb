/** The run as a DBOS workflow: starting it, its turns, its approvals, its handle. */

import { DBOS } from "@dbos-inc/dbos-sdk";
import { Agent, OpenAIProvider, RunState, Runner, type AgentInputItem, type Model, type ModelProvider, type Session } from "@openai/agents";
import OpenAI from "openai";

import { agentNamed, registerAgent } from "./agents.js";
import { DEFAULT_MAX_TURNS, WORKFLOW, ensureDBOSLaunched, openaiApi, statusOutside } from "./config.js";
import { DurableModelProvider, durableAgent } from "./durable.js";
import { SessionBusyError, UnknownAgentError, ValidationError, checkRunId } from "./errors.js";
import { RunEvents, busRuns, eventsOfThisRun, stoppedByDBOS } from "./events.js";
import { liveSessions, sessionOf, storeFor, type SessionStore } from "./sessions.js";
import { SESSION_POLICIES, releaseTurn, takeTurn, type SessionPolicy } from "./turns.js";
import { checkMaxTokens, checkModelRetry, clearLimits, setLimits, type ModelRetry } from "./limits.js";
import { database } from "./store.js";


/** A run's input as DBOS records it (plain data: the agent by name; a resumed run's state as its string). */
export interface RunSpec {
  agent: string;
  input?: string | AgentInputItem[];
  state?: string;
  maxTurns: number;
  context?: unknown;
  waitForApproval?: boolean;
  approvalTimeoutSeconds?: number;
  /** Set for a run started from the bus: its events are published, numbered from `seqBase + 1`. */
  seqBase?: number;
  /** A bus run that streams: its text as `delta` events (and live). */
  stream?: boolean;
  /** The run's session, by its id (`session.getSessionId()`): the caller's object here, else made again
   * from `sessionStore`. */
  sessionId?: string;
  sessionStore?: SessionStore;
  /** With `sessionId`: what the run does when another run of the session is unfinished (see `turns`). */
  sessionPolicy?: SessionPolicy;
  /** The queue the run came through (a bus run's is the governor's), for its approvals' records. */
  queue?: string;
  /** The run's model-token budget (see `BudgetExceeded`). */
  maxTokens?: number;
  /** How the run's failed model calls are retried, over TIMESTEP_MODEL_*. */
  modelRetry?: ModelRetry;
}

/** A tool call waiting for a human's decision. `deadline` (epoch seconds): when it is rejected unless decided. */
export interface Approval {
  callId: string;
  tool: string;
  arguments: string;
  deadline?: number;
  /** When the run asked (epoch seconds). */
  requestedAt?: number;
}

export type Usage4 = { requests: number; inputTokens: number; outputTokens: number; totalTokens: number };

interface RunOutput {
  status: "completed" | "interrupted";
  output: unknown;
  usage: Usage4;
  interruptions?: Approval[];
}

/** A decision sent to a waiting run (`approveToolCall`, `rejectToolCall`). */
export interface Decision {
  type: "approve" | "reject";
  callId: string;
  always?: boolean;
  arguments?: string;
  message?: string;
  decidedBy?: string;
}

/** The run's events (DBOS's durable key-value per workflow): its saved state while it is interrupted,
 * and the tool calls it waits on while it waits for decisions. */
export const STATE_EVENT = "timestep.run_state";
export const WAITING_EVENT = "timestep.waiting";
export const DECISION_TOPIC = "timestep.decision";
/** The longest one wait for a decision lasts before it is taken up again (each wait is recorded). */
const DECISION_WAIT_SECONDS = 3600;

function usageOf(state: RunState<any, any>): Usage4 {
  const u = state.usage;
  return { requests: u.requests, inputTokens: u.inputTokens, outputTokens: u.outputTokens, totalTokens: u.totalTokens };
}

function approvalsOf(state: RunState<any, any>, timeoutSeconds?: number): Approval[] {
  const requestedAt = Date.now() / 1000;
  const deadline = timeoutSeconds ? requestedAt + timeoutSeconds : undefined;
  return state.getInterruptions().map((item) => ({
    callId: (item.rawItem as { callId?: string }).callId ?? "",
    tool: item.name ?? "",
    arguments: item.arguments ?? "",
    ...(deadline === undefined ? {} : { deadline }),
    requestedAt,
  }));
}

/** The approved call runs with `edited` arguments: in the approval item, in the turn's processed
 * function calls the runner resumes from, and in the items the run keeps (so its history shows them). */
function editArguments(state: RunState<any, any>, callId: string, edited: string): void {
  const calls: { callId?: string; arguments?: string }[] = [
    ...state.getInterruptions().map((i) => i.rawItem as { callId?: string; arguments?: string }),
    ...(state._lastProcessedResponse?.functions ?? []).map((f) => f.toolCall as { callId?: string; arguments?: string }),
    ...state._generatedItems.map((i) => i.rawItem as { callId?: string; arguments?: string }),
  ];
  for (const call of calls) if (call?.callId === callId && typeof call.arguments === "string") call.arguments = edited;
}

/** Wait (durably) until each waiting call of `state` is approved or rejected, or rejected at its deadline.
 * Each wait is a recorded `recv`: after a crash the run waits on, with the deadlines it had. */
async function awaitDecisions(state: RunState<any, any>, waiting: Approval[], spec: RunSpec): Promise<void> {
  const pending = new Map(waiting.map((a) => [a.callId, a]));
  const items = new Map(state.getInterruptions().map((i) => [(i.rawItem as { callId?: string }).callId ?? "", i]));
  while (pending.size > 0) {
    const due = [...pending.values()].map((a) => a.deadline).filter((d): d is number => d !== undefined);
    const earliest = due.length ? Math.min(...due) : undefined;
    // The clock is read in a step, so a replay waits the same as the first execution did.
    const now = await DBOS.runStep(async () => Date.now() / 1000, { name: "clock" });
    const wait = earliest === undefined ? DECISION_WAIT_SECONDS : Math.max(0, earliest - now);
    const decision = await DBOS.recv<Decision>(DECISION_TOPIC, wait);
    const decided: Record<string, unknown>[] = [];  // a bus run's tool_approved and tool_rejected events
    if (decision === null) {
      if (earliest === undefined) continue;
      for (const [callId, a] of [...pending]) {
        if (a.deadline !== undefined && a.deadline <= earliest) {
          const message = `No decision came before the approval deadline; the call to ${a.tool} was not made.`;
          state.reject(items.get(callId)!, { message });
          pending.delete(callId);
          decided.push({ type: "tool_rejected", call_id: callId, tool: a.tool, message, always: false, decided_by: null, expired: true });
        }
      }
    } else {
      const asked = pending.get(decision.callId);
      if (!asked) continue;  // checked before it was sent: a second decision on the same call
      const item = items.get(decision.callId)!;
      const same = [...pending.values()].filter((a) => a.callId === decision.callId || (decision.always && a.tool === asked.tool));
      if (decision.type === "approve") {
        if (decision.arguments !== undefined) editArguments(state, decision.callId, decision.arguments);
        state.approve(item, { alwaysApprove: decision.always ?? false });
      } else {
        state.reject(item, { alwaysReject: decision.always ?? false, ...(decision.message ? { message: decision.message } : {}) });
      }
      for (const a of same) {
        if (a.callId !== decision.callId) {
          const other = items.get(a.callId)!;
          if (decision.type === "approve") state.approve(other, { alwaysApprove: true });
          else state.reject(other, { alwaysReject: true, ...(decision.message ? { message: decision.message } : {}) });
        }
        pending.delete(a.callId);
        const always = decision.always ?? false;
        decided.push(decision.type === "approve"
          ? { type: "tool_approved", call_id: a.callId, tool: a.tool, always, arguments: a.callId === decision.callId ? decision.arguments ?? null : null, decided_by: decision.decidedBy ?? null }
          : { type: "tool_rejected", call_id: a.callId, tool: a.tool, message: decision.message ?? null, always, decided_by: decision.decidedBy ?? null, expired: false });
      }
    }
    const events = eventsOfThisRun();
    if (decided.length) {
      const seq = events?.take(decided.length) ?? 0;
      // The audit trail's records and a bus run's events, in the step that records the decision.
      await DBOS.runStep(async () => {
        await recordDecisions(DBOS.workflowID!, spec, decided.map((d) => ({ ...d, asked: waiting.find((a) => a.callId === d.call_id)! })));
        if (events) for (const [i, { type, ...fields }] of decided.entries()) await events.emit(seq + i, type as string, fields);
      }, { name: "run.decision" });
    }
    await DBOS.setEvent(WAITING_EVENT, [...pending.values()]);
  }
}

/** The decided calls as the approvals audit trail keeps them (`ApprovalRecord`s of the contract), once each. */
async function recordDecisions(runId: string, spec: RunSpec, decided: (Record<string, unknown> & { asked: Approval })[]): Promise<void> {
  const db = await database();
  const now = Date.now() / 1000;
  for (const d of decided) {
    const status = d.type === "tool_approved" ? "approved" : d.expired ? "expired" : "rejected";
    await db.query(
      `INSERT INTO timestep.approvals (run_id, call_id, agent, tool, arguments, session_id, queue, requested_at, deadline, status,
         decided_at, decided_by, message, always, approved_arguments)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (run_id, call_id) DO NOTHING`,
      [
        runId, d.asked.callId, spec.agent, d.asked.tool, d.asked.arguments, spec.sessionId ?? null, spec.queue ?? null, d.asked.requestedAt ?? now,
        d.asked.deadline ?? null, status, now, d.expired ? "deadline" : (d.decided_by as string | null) ?? null,
        (d.message as string | null) ?? null, Boolean(d.always), (d.arguments as string | null) ?? null,
      ],
    );
  }
}

export const agentRun = DBOS.registerWorkflow(async (spec: RunSpec): Promise<RunOutput> => {
  const runId = DBOS.workflowID!;
  const events = spec.seqBase === undefined ? undefined : new RunEvents(runId, spec.seqBase);
  if (events) busRuns.set(runId, events);
  setLimits(runId, spec.maxTokens, spec.modelRetry);
  const turns = spec.sessionId !== undefined && spec.sessionPolicy !== undefined;
  let ended = true;  // false when DBOS stops the run here to go on elsewhere: it keeps its turn
  let released = false;
  /** The next run of the session may go: done before the run's last event, as on the Python side, so a follower
   * that sees the end may send the session's next run at once. Not a step; idempotent. */
  const release = async () => {
    if (!turns || released) return;
    released = true;
    // Not given up for a failure here: the next run of the session passes over this one once DBOS has it ended.
    await releaseTurn(runId).catch((e) => console.warn(`run ${runId} could not release its session turn: ${(e as Error).message}`));
  };
  try {
    if (turns) {
      try {
        await takeTurn(spec.sessionId!, runId, spec.sessionPolicy!);
      } catch (e) {
        if (events && e instanceof SessionBusyError) {
          const rejected = events.take(1);
          const error = { type: "SessionBusy", message: e.message, field: e.field };
          await DBOS.runStep(() => events.emit(rejected, "rejected", { error }), { name: "run.rejected" });
        }
        throw e;
      }
    }
    return events ? await busRun(spec, events, release) : await execute(spec);
  } catch (e) {
    if (stoppedByDBOS(e)) {
      if ((await statusOutside(runId)) === "CANCELLED") {
        // Cancelled, wherever it was (waiting for its turn, in a step): no step runs after a cancel, so a bus
        // run's `cancelled` is published as it is (a replay's copy is dropped by its message id).
        await release();
        if (events) await events.emit(events.take(1), "cancelled");
      } else {
        ended = false;
      }
    }
    throw e;
  } finally {
    busRuns.delete(runId);
    clearLimits(runId);
    liveSessions.delete(runId);
    if (ended) await release();
  }
}, { name: WORKFLOW });

/** A run from the bus: its events published, each stored before the step that emits it is recorded. */
async function busRun(spec: RunSpec, events: RunEvents, release: () => Promise<void>): Promise<RunOutput> {
  const started = events.take(1);
  await DBOS.runStep(() => events.emit(started, "started"), { name: "run.started" });
  let output: RunOutput;
  try {
    output = await execute(spec);
  } catch (e) {
    if (!stoppedByDBOS(e)) {  // a stop by DBOS (a cancel, or the run going on elsewhere) is the workflow's to say
      await release();
      const failed = events.take(1);
      const error = { type: (e as Error).name || "Error", message: (e as Error).message ?? String(e) };
      await DBOS.runStep(() => events.emit(failed, "failed", { error }), { name: "run.failed" });
    }
    throw e;
  }
  await release();
  const completed = events.take(1);
  const usage = { requests: output.usage.requests, input_tokens: output.usage.inputTokens, output_tokens: output.usage.outputTokens, total_tokens: output.usage.totalTokens };
  await DBOS.runStep(() => events.emit(completed, "completed", { output: output.output ?? null, usage }), { name: "run.completed" });
  return output;
}

/** Models named by a string, from OpenAI (or OPENAI_BASE_URL), with the client made when a run first names
 * one (it needs OPENAI_API_KEY) and its own retries off: each attempt is a step of the run, and the waits
 * between attempts are durable (see `modelRetry`). */
class OpenAIModels implements ModelProvider {
  private provider: OpenAIProvider | undefined;

  async getModel(modelName?: string): Promise<Model> {
    this.provider ??= new OpenAIProvider({ useResponses: openaiApi() === "responses", openAIClient: new OpenAI({ maxRetries: 0 }) });
    return this.provider.getModel(modelName);
  }
}

/** The run itself: the agent's turns, each model call and tool call a step, and its approvals. */
async function execute(spec: RunSpec): Promise<RunOutput> {
  const agent = agentNamed(spec.agent);
  if (!agent) {
    throw new UnknownAgentError(
      `agent: no agent named ${JSON.stringify(spec.agent)} is registered in this process; ` +
      "call registerAgent(agent) at start-up, before ensureDBOSLaunched()",
    );
  }
  const durable = durableAgent(agent);
  const runner = new Runner({ tracingDisabled: true, modelProvider: new DurableModelProvider(new OpenAIModels()) });
  let input: string | AgentInputItem[] | RunState<any, any> = spec.state !== undefined ? await RunState.fromString(durable, spec.state) : spec.input!;
  let saved = spec.state !== undefined;
  const runId = DBOS.workflowID!;
  const session = spec.sessionId === undefined ? undefined : await sessionOf(runId, spec.sessionId, spec.sessionStore);
  for (;;) {
    const options = {
      maxTurns: spec.maxTurns, ...(spec.context === undefined ? {} : { context: spec.context }),
      ...(session ? { session } : {}),
    };
    let result;
    if (spec.stream) {
      const streamed = await runner.run(durable, input, { ...options, stream: true });
      await streamed.completed;
      if (streamed.error) throw streamed.error;
      result = streamed;
    } else {
      result = await runner.run(durable, input, options);
    }
    if (!result.interruptions?.length) {
      if (saved) await DBOS.setEvent(STATE_EVENT, null);  // nothing left to resume
      return { status: "completed", output: result.finalOutput, usage: usageOf(result.state) };
    }
    // A step: the deadlines are set once, and a replay reads them from the record.
    const waiting = await DBOS.runStep(async () => approvalsOf(result.state, spec.approvalTimeoutSeconds), { name: "run.interrupted" });
    // Saved before the run returns or waits: `RunStateStore` loads it, `approveToolCall` checks against it.
    await DBOS.setEvent(STATE_EVENT, result.state.toString());
    saved = true;
    if (!spec.waitForApproval) {
      return { status: "interrupted", output: undefined, usage: usageOf(result.state), interruptions: waiting };
    }
    await DBOS.setEvent(WAITING_EVENT, waiting);
    const events = eventsOfThisRun();
    if (events) {  // after the calls are saved as waiting: a decision sent on seeing it is taken
      const seq = events.take(1);
      const approvals = waiting.map((a) => ({ call_id: a.callId, tool: a.tool, arguments: a.arguments, ...(a.deadline === undefined ? {} : { deadline: a.deadline }) }));
      await DBOS.runStep(() => events.emit(seq, "interrupted", { approvals }), { name: "run.interrupted.event" });
    }
    await awaitDecisions(result.state, waiting, spec);
    input = result.state;
  }
}

/** What `runAgentWorkflow` returns, as `RunResult` on the Python side: `status` is `completed`, or
 * `interrupted` with the tool calls waiting for approval in `interruptions` (the run's state is saved:
 * see `RunStateStore`). */
export interface RunResult {
  workflowId: string;
  status: "completed" | "interrupted";
  output: unknown;
  usage: Usage4;
  interruptions: Approval[];
}

/** The error a run ended with as its class: DBOS gives back a stored error as a plain `Error` with its name
 * and fields. */
function revived(e: unknown): unknown {
  const stored = e as { name?: unknown; sessionId?: unknown; runningRunId?: unknown } | null;
  if (stored?.name === "SessionBusyError" && !(e instanceof SessionBusyError) && typeof stored.sessionId === "string" && typeof stored.runningRunId === "string") {
    return new SessionBusyError(stored.sessionId, stored.runningRunId);
  }
  return e;
}

/** A run started before, in this process or another: its status and, once it ends, its result. */
export class RunHandle {
  constructor(readonly workflowId: string) {}

  /** Wait for the run to end: its result, or the error it ended with. */
  async getResult(): Promise<RunResult> {
    let done: RunOutput;
    try {
      done = (await DBOS.retrieveWorkflow<RunOutput>(this.workflowId).getResult()) as RunOutput;
    } catch (e) {
      throw revived(e);
    }
    return { workflowId: this.workflowId, status: done.status ?? "completed", output: done.output, usage: done.usage, interruptions: done.interruptions ?? [] };
  }

  /** `queued`, `running`, `completed`, `failed` or `cancelled` (undefined: no run has this id). */
  async getStatus(): Promise<string | undefined> {
    const status = await DBOS.getWorkflowStatus(this.workflowId);
    if (!status) return undefined;
    const words: Record<string, string> = {
      PENDING: "running", ENQUEUED: "queued", SUCCESS: "completed", ERROR: "failed", CANCELLED: "cancelled",
      MAX_RECOVERY_ATTEMPTS_EXCEEDED: "failed",
    };
    return words[status.status] ?? status.status.toLowerCase();
  }

  /** The run's recorded steps, in order: `model`, `tool:<name>`. */
  async steps(): Promise<{ number: number; name: string }[]> {
    const steps = (await DBOS.listWorkflowSteps(this.workflowId)) ?? [];
    return steps.map((s) => ({ number: s.functionID + 1, name: s.name }));
  }
}


/**
 * Run `agent` as a durable workflow and wait for its result. Every model call and every function tool
 * call is a step, so after a crash the run resumes where it was (in the next process of this executor
 * id, once it registers the agent and launches). The same `workflowId` again returns the first run's
 * result without running anything.
 *
 * `session` and `stream` keep the guide's positions; neither is built for TypeScript agents yet, so
 * each must be left undefined (or false). `context` is the run context handed to tools; it is recorded
 * with the run's input, so it must be plain data.
 */
export async function runAgentWorkflow(...args: Parameters<typeof startAgentWorkflow>): Promise<RunResult> {
  return (await startAgentWorkflow(...args)).getResult();
}

/** A run from the bus, as the governor hands it on (`<prefix>.runs.start.typescript`). */
export interface BusRun {
  agent: string;
  input: string | AgentInputItem[];
  maxTurns: number;
  /** Its events are numbered from `seqBase + 1`. */
  seqBase: number;
  timeoutSeconds?: number | null;
  context?: unknown;
  approvalTimeoutSeconds?: number | null;
  stream?: boolean;
  sessionId?: string | null;
  sessionPolicy?: SessionPolicy | null;
  maxTokens?: number | null;
  modelRetry?: ModelRetry | null;
  queue?: string | null;
}

/** Start the run a governor handed on as workflow `runId`; a second start of the same id is the same
 * run. For `serveAgents`. A session's history is the registered session factory's, else Timestep's
 * `DatabaseSession`. */
export async function startBusRun(runId: string, run: BusRun): Promise<void> {
  await ensureDBOSLaunched();
  const { agent, input, maxTurns, seqBase, timeoutSeconds, context, approvalTimeoutSeconds, stream, sessionId, sessionPolicy, maxTokens, modelRetry, queue } = run;
  // A run from the bus waits for its approvals (approve and reject come over the bus), as on the Python side.
  const spec: RunSpec = {
    agent, input, maxTurns, seqBase, waitForApproval: true, ...(stream ? { stream } : {}),
    ...(approvalTimeoutSeconds ? { approvalTimeoutSeconds } : {}),
    ...(context === undefined || context === null ? {} : { context }),
    ...(sessionId ? { sessionId, sessionStore: storeFor(undefined), sessionPolicy: sessionPolicy ?? "enqueue" } : {}),
    ...(maxTokens ? { maxTokens } : {}), ...(modelRetry ? { modelRetry } : {}), ...(queue ? { queue } : {}),
  };
  await DBOS.startWorkflow(agentRun, { workflowID: runId, ...(timeoutSeconds ? { timeoutMS: timeoutSeconds * 1000 } : {}) })(spec);
}

/** What a run does beyond the guide's positional arguments. */
export interface RunOptions {
  /** When the run is interrupted for approval, wait (durably) for `approveToolCall` / `rejectToolCall`
   * and go on in the same workflow, instead of returning `interrupted` (default false). */
  waitForApproval?: boolean;
  /** With `waitForApproval`: a call not decided within this many seconds is rejected (default: no deadline). */
  approvalTimeoutSeconds?: number;
  /** With a session: what the run does when another run of the session is unfinished. `enqueue` (default):
   * wait for it, in order of arrival; `reject`: fail at once with `SessionBusyError`, naming it; `interrupt`:
   * cancel it and go on with the history so far. */
  sessionPolicy?: SessionPolicy;
  /** The run's model-token budget: it fails with `BudgetExceeded` after the model call that crosses it. */
  maxTokens?: number;
  /** How its failed model calls are retried (`maxAttempts`, `maxWaitSeconds`, `baseSeconds`, `maxBackoffSeconds`);
   * a setting left out keeps TIMESTEP_MODEL_*'s. */
  modelRetry?: ModelRetry;
}

/** `runAgentWorkflow(agent, inputItems, session?, stream?, timeoutSeconds?, maxTurns = 10, context?, workflowId?, options?)`
 * without waiting: the run's handle once it has started. `inputItems` may be the `RunState` of an
 * interrupted run (from `RunStateStore`), its interruptions approved or rejected: the run goes on from it. */
export async function startAgentWorkflow(
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[] | RunState<any, any>,
  session?: unknown,
  stream = false,
  timeoutSeconds?: number,
  maxTurns: number = DEFAULT_MAX_TURNS,
  context?: unknown,
  workflowId?: string,
  options: RunOptions = {},
): Promise<RunHandle> {
  const { id, spec, timeoutMS } = await prepare(agent, inputItems, session, stream, timeoutSeconds, maxTurns, context, workflowId, options);
  await DBOS.startWorkflow(agentRun, { workflowID: id, ...(timeoutMS ? { timeoutMS } : {}) })(spec);
  return new RunHandle(id);
}

/** A run's arguments checked (each refusal names its field and the fix) and made its workflow input. */
export async function prepare(
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[] | RunState<any, any>,
  session: unknown,
  stream: boolean,
  timeoutSeconds: number | undefined,
  maxTurns: number,
  context: unknown,
  workflowId: string | undefined,
  options: RunOptions,
): Promise<{ id: string; spec: RunSpec; timeoutMS?: number }> {
  registerAgent(agent);
  const resumed = inputItems instanceof RunState;
  if (!resumed && typeof inputItems !== "string" && !Array.isArray(inputItems)) {
    throw new ValidationError("inputItems", "is neither a string, a list of input items nor a RunState", "pass the user's text, a list of items, or a loaded RunState");
  }
  let sessionId: string | undefined;
  if (session !== undefined && session !== null) {
    const methods = ["getSessionId", "getItems", "addItems", "popItem", "clearSession"] as const;
    const missing = methods.find((m) => typeof (session as Record<string, unknown>)[m] !== "function");
    if (missing) {
      throw new ValidationError("session", `is not a Session of @openai/agents (it has no ${missing}())`, "pass e.g. new MemorySession(), or undefined");
    }
    sessionId = await (session as Session).getSessionId();
    if (typeof sessionId !== "string" || !sessionId) {
      throw new ValidationError("session", `its getSessionId() gave ${JSON.stringify(sessionId)}`, "give the session a non-empty id: a recovered run finds its session by it");
    }
  }
  if (stream) throw new ValidationError("stream", "streaming is not built for TypeScript agents yet", "pass false");
  if (timeoutSeconds !== undefined && !(typeof timeoutSeconds === "number" && timeoutSeconds > 0 && timeoutSeconds <= 31_536_000)) {
    throw new ValidationError("timeoutSeconds", `${timeoutSeconds} is not a number of seconds from 0 to 365 days`, "give e.g. 600, or none");
  }
  if (!Number.isInteger(maxTurns) || maxTurns < 1) {
    throw new ValidationError("maxTurns", `${maxTurns} is not a whole number of turns`, "give 1 or more");
  }
  if (workflowId !== undefined) checkRunId("workflowId", workflowId);
  const { waitForApproval = false, approvalTimeoutSeconds, sessionPolicy, maxTokens, modelRetry, ...unknown } = options ?? {};
  const stray = Object.keys(unknown);
  if (stray.length) {
    throw new ValidationError(`options.${stray[0]}`, "is not an option", "use waitForApproval, approvalTimeoutSeconds, sessionPolicy, maxTokens or modelRetry");
  }
  const budget = checkMaxTokens("options.maxTokens", maxTokens);
  const retry = checkModelRetry("options.modelRetry", modelRetry);
  if (sessionPolicy !== undefined) {
    if (!SESSION_POLICIES.includes(sessionPolicy)) {
      throw new ValidationError("options.sessionPolicy", `${JSON.stringify(sessionPolicy)} is not a session policy`, "use enqueue, reject or interrupt");
    }
    if (sessionId === undefined) throw new ValidationError("options.sessionPolicy", "applies only to a run with a session", "pass a session with it, or leave it out");
  }
  if (typeof waitForApproval !== "boolean") throw new ValidationError("options.waitForApproval", `${JSON.stringify(waitForApproval)} is not true or false`, "pass a boolean");
  if (approvalTimeoutSeconds !== undefined) {
    if (!waitForApproval) throw new ValidationError("options.approvalTimeoutSeconds", "applies only to a run that waits for approval", "pass waitForApproval: true with it, or leave it out");
    if (!(typeof approvalTimeoutSeconds === "number" && approvalTimeoutSeconds > 0 && approvalTimeoutSeconds <= 31_536_000)) {
      throw new ValidationError("options.approvalTimeoutSeconds", `${approvalTimeoutSeconds} is not a number of seconds from 0 to 365 days`, "give e.g. 3600, or none");
    }
  }
  await ensureDBOSLaunched();
  const spec: RunSpec = {
    agent: agent.name, maxTurns,
    ...(sessionId === undefined ? {} : { sessionId, sessionStore: storeFor(session as Session), sessionPolicy: sessionPolicy ?? "enqueue" }),
    ...(resumed ? { state: inputItems.toString() } : { input: inputItems }),
    ...(context === undefined ? {} : { context }),
    ...(waitForApproval ? { waitForApproval } : {}),
    ...(approvalTimeoutSeconds === undefined ? {} : { approvalTimeoutSeconds }),
    ...(budget === undefined ? {} : { maxTokens: budget }), ...(retry === undefined ? {} : { modelRetry: retry }),
  };
  const id = workflowId ?? crypto.randomUUID().replaceAll("-", "");
  if (session) liveSessions.set(id, session as Session);  // this process's own object; a recovery asks the factory
  return { id, spec, ...(timeoutSeconds ? { timeoutMS: timeoutSeconds * 1000 } : {}) };
}

