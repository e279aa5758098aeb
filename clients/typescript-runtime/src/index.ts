/**
 * Durable runs of OpenAI Agents SDK agents written in TypeScript, as Timestep's Python library runs
 * Python agents: `runAgentWorkflow` runs an agent as a DBOS workflow in which each model call and each
 * function tool call is a recorded step. After a crash, the run resumes in the next process that
 * launches with the same executor id: what finished comes back from the record and is not called again.
 *
 * DBOS's TypeScript SDK stores runs in PostgreSQL only (PG_CONNECTION_URI).
 */

import { DBOS, DBOSClient, Error as DBOSErrors } from "@dbos-inc/dbos-sdk";
import {
  Agent, OpenAIProvider, RunState, Runner, Usage,
  type AgentInputItem, type Session, type FunctionTool, type Model, type ModelProvider, type ModelRequest, type ModelResponse, type StreamEvent, type Tool,
} from "@openai/agents";

/** A setting or call that cannot work as given; `field` names what to change. */
export class ValidationError extends Error {
  constructor(readonly field: string, problem: string, readonly fix: string) {
    super(`${field}: ${problem}; ${fix}`);
    this.name = "ValidationError";
  }
}

/** DBOS cannot be configured or launched as asked. */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
}

/** A run's agent is not registered in this process (a recovered run needs it registered before launch). */
export class UnknownAgentError extends Error {
  override name = "UnknownAgentError";
}

/** No run has the id given. */
export class UnknownRunError extends Error {
  override name = "UnknownRunError";
}

/** A run with the same `deduplicationId` is still queued or running on the queue. */
export class DuplicateRunError extends Error {
  override name = "DuplicateRunError";
  constructor(message: string, readonly workflowId: string, readonly deduplicationId: string) {
    super(message);
  }
}

/** The run is not waiting for a decision on that tool call (it ended, or never asked, or it was decided). */
export class NotWaitingError extends Error {
  override name = "NotWaitingError";
}

// --- configuration ---------------------------------------------------------------------------

/** The workflow's name in DBOS: a rename would strand the runs in flight. */
const WORKFLOW = "timestep.ts.agent_run";
const DEFAULT_MAX_TURNS = 10;

export interface DBOSOptions {
  /** The system database, `postgresql://...` (default: PG_CONNECTION_URI). */
  systemDatabaseUrl?: string;
  /** The application's name in DBOS (default `timestep`). */
  name?: string;
}

let configured: {
  name: string; systemDatabaseUrl: string; executorID: string; applicationVersion: string; logLevel: string; systemDatabasePoolSize: number;
} | undefined;
let launched = false;

/** TIMESTEP_LOG_LEVEL (Python's names, default WARNING) as DBOS's TypeScript SDK names it. */
function logLevel(level: string): string {
  const names: Record<string, string> = { DEBUG: "debug", INFO: "info", WARNING: "warn", WARN: "warn", ERROR: "error", CRITICAL: "error" };
  const name = names[level.toUpperCase()];
  if (!name) throw new ValidationError("TIMESTEP_LOG_LEVEL", `${JSON.stringify(level)} is not a log level`, "use DEBUG, INFO, WARNING or ERROR");
  return name;
}

/** TIMESTEP_DB_POOL_SIZE (default 20): the most database connections this process opens. */
function poolSize(value: string): number {
  const size = Number(value);
  if (!Number.isInteger(size) || size < 1 || size > 1000) {
    throw new ValidationError("TIMESTEP_DB_POOL_SIZE", `${JSON.stringify(value)} is not a number of connections`, "give a whole number from 1 to 1000");
  }
  return size;
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/**
 * Configure DBOS for Timestep (idempotent): the system database from `options` or PG_CONNECTION_URI,
 * the executor id from TIMESTEP_EXECUTOR_ID (default `local`) and the application version from
 * TIMESTEP_APP_VERSION (default `timestep-1`), its pool from TIMESTEP_DB_POOL_SIZE (default 20) and its
 * log level from TIMESTEP_LOG_LEVEL (default WARNING): the same settings as the Python side. A process
 * recovers the unfinished runs of its executor id and application version when it launches.
 */
export function configureDBOS(options: DBOSOptions = {}): void {
  const url = options.systemDatabaseUrl ?? process.env.PG_CONNECTION_URI;
  if (!url) {
    throw new ValidationError(
      "PG_CONNECTION_URI", "is not set, and DBOS's TypeScript SDK stores runs in PostgreSQL only",
      "set PG_CONNECTION_URI=postgresql://user:password@host:5432/database, or pass configureDBOS({ systemDatabaseUrl })",
    );
  }
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new ValidationError(
      options.systemDatabaseUrl ? "systemDatabaseUrl" : "PG_CONNECTION_URI", `${JSON.stringify(redact(url))} is not a postgresql:// URL`,
      "give e.g. postgresql://user:password@host:5432/database (DBOS's TypeScript SDK has no SQLite)",
    );
  }
  const name = options.name ?? "timestep";
  if (!/^[a-z0-9_-]{3,256}$/.test(name)) {
    throw new ValidationError("name", `${JSON.stringify(name)} is not a valid application name`, "use 3-256 characters of a-z, 0-9, '_' and '-'");
  }
  const config = {
    name,
    systemDatabaseUrl: url,
    executorID: process.env.TIMESTEP_EXECUTOR_ID || "local",
    applicationVersion: process.env.TIMESTEP_APP_VERSION || "timestep-1",
    logLevel: logLevel(process.env.TIMESTEP_LOG_LEVEL || "WARNING"),
    systemDatabasePoolSize: poolSize(process.env.TIMESTEP_DB_POOL_SIZE || "20"),
  };
  if (configured && JSON.stringify(configured) === JSON.stringify(config)) return;
  if (launched) {
    throw new ConfigurationError(
      `Timestep is already launched on ${redact(configured!.systemDatabaseUrl)}; call configureDBOS() with other settings only before ensureDBOSLaunched()`,
    );
  }
  DBOS.setConfig(config);
  configured = config;
}

/** Launch DBOS once (idempotent; configures it with the defaults first if needed). Runs of this
 * executor id left unfinished by a process that stopped resume now: register their agents first. */
export async function ensureDBOSLaunched(): Promise<void> {
  if (launched) return;
  if (!configured) configureDBOS();
  await DBOS.launch();
  launched = true;
}

/** Shut DBOS down (tests and clean exits); the process's unfinished runs resume in the next one. */
export async function shutdownDBOS(): Promise<void> {
  if (!launched) return;
  await reader?.destroy();
  reader = undefined;
  await DBOS.shutdown();
  launched = false;
}

// --- agents ----------------------------------------------------------------------------------

const agents = new Map<string, Agent<any, any>>();

/** The names of the agents registered in this process. */
export function registeredAgents(): string[] {
  return [...agents.keys()].sort();
}

/** Make `agent` the one its runs use in this process, by its name. A program registers its agents
 * before `ensureDBOSLaunched()`, so the runs recovered at launch find them. Returns `agent`. */
export function registerAgent<A extends Agent<any, any>>(agent: A): A {
  if (!(agent instanceof Agent)) {
    throw new ValidationError("agent", "is not an Agent of @openai/agents", "pass new Agent({ name, instructions, model, tools })");
  }
  if (!agent.name) throw new ValidationError("agent.name", "is empty", "give the agent a name: its runs find it by name");
  agents.set(agent.name, agent);
  return agent;
}

// --- run events (agent actors on the bus) ---------------------------------------------------

/** One event of a run as the subject contract has it (`subjects/events.py`): `type`, `run_id`, `seq`,
 * `time` and the type's own fields. */
export type RunEvent = { type: string; run_id: string; seq: number; time: string } & Record<string, unknown>;

/** Where the events of runs started from the bus go (set by `serveAgents`): stored (JetStream) before the
 * promise resolves, de-duplicated by `<run_id>.<seq>`. */
let sink: ((event: RunEvent) => Promise<void>) | undefined;
let sinkSet: () => void = () => {};
let sinkReady = new Promise<void>((resolve) => (sinkSet = resolve));
/** How long a bus run's event waits for the bus (a run recovered at launch, before `serveAgents` connected). */
const SINK_WAIT_MS = 60_000;

/** Where a streamed run's text goes as the model yields it (not stored): `<prefix>.runs.live.<run_id>`. */
let live: ((piece: { run_id: string; call: number; offset: number; text: string; time: string }) => Promise<void>) | undefined;

export function setEventSink(publish: ((event: RunEvent) => Promise<void>) | undefined, livePublish?: typeof live): void {
  sink = publish;
  live = livePublish;
  if (publish) sinkSet();
  else sinkReady = new Promise<void>((resolve) => (sinkSet = resolve));
}

/** A bus run's event numbering: the next number, counted the same on a replay (each step that emits
 * takes its numbers before it runs, whether it runs or comes from the record). */
class RunEvents {
  /** The run's model calls so far (a live piece's `call`). */
  calls = 0;

  constructor(readonly runId: string, public seq: number) {}

  take(n: number): number {
    const first = this.seq + 1;
    this.seq += n;
    return first;
  }

  async emit(seq: number, type: string, fields: Record<string, unknown> = {}): Promise<void> {
    if (!sink) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([sinkReady, new Promise((resolve) => (timer = setTimeout(resolve, SINK_WAIT_MS)))]);
      clearTimeout(timer);
    }
    if (!sink) throw new ConfigurationError("a run from the bus needs the bus: call serveAgents() in the process that executes it (its events have nowhere to go)");
    await sink({ type, run_id: this.runId, seq, time: new Date().toISOString(), ...fields });
  }
}

const busRuns = new Map<string, RunEvents>();

function eventsOfThisRun(): RunEvents | undefined {
  const id = DBOS.workflowID;
  return id === undefined ? undefined : busRuns.get(id);
}

/** Whether `e` (or what it wraps: the SDK wraps a tool step's error) is DBOS stopping the workflow here:
 * cancelled, or owned by another execution now. */
function stoppedByDBOS(e: unknown, depth = 0): boolean {
  if (e instanceof DBOSErrors.DBOSWorkflowCancelledError || e instanceof DBOSErrors.DBOSWorkflowConflictError) return true;
  if (!e || typeof e !== "object" || depth > 5) return false;
  const { cause, error } = e as { cause?: unknown; error?: unknown };
  return stoppedByDBOS(cause, depth + 1) || stoppedByDBOS(error, depth + 1);
}

let reader: DBOSClient | undefined;

/** A run's status read outside its workflow (inside, a read is a step, and a stopped workflow runs none). */
async function statusOutside(runId: string): Promise<string | undefined> {
  reader ??= await DBOSClient.create({ systemDatabaseUrl: configured!.systemDatabaseUrl, systemDatabasePoolSize: 1 });
  return (await reader.getWorkflow(runId))?.status;
}

function asText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

// --- durable model and tool calls ------------------------------------------------------------

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

/** Each call of `inner` is the step `model` of the run: recorded before the run goes on, and on
 * recovery returned from the record without calling the model again. */
class DurableModel implements Model {
  constructor(private readonly inner: Model) {}

  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const response = await DBOS.runStep(async () => recorded(await this.inner.getResponse(request)), { name: "model" });
    return { ...response, usage: new Usage(response.usage) };
  }

  /** A streamed call (a bus run asked with `stream`) is the step `model` too: each text delta is published live
   * (core NATS, `<prefix>.runs.live.<run_id>`) and stored as a `delta` event before the next is read, and the
   * step records the final response and the number of deltas, so a replay numbers the run's events the same
   * and yields the recorded response without calling the model. */
  async *getStreamedResponse(request: ModelRequest): AsyncIterable<StreamEvent> {
    const events = eventsOfThisRun();
    if (!events) throw new ValidationError("stream", "streaming is built for runs from the bus only", "run with stream false");
    const base = events.seq;
    const call = ++events.calls;
    const done = await DBOS.runStep(async () => {
      let deltas = 0;
      let offset = 0;
      let final: unknown;
      for await (const event of this.inner.getStreamedResponse(request)) {
        if (event.type === "output_text_delta" && event.delta) {
          await live?.({ run_id: events.runId, call, offset, text: event.delta, time: new Date().toISOString() });
          offset += event.delta.length;
          deltas += 1;
          await events.emit(base + deltas, "delta", { text: event.delta });
        } else if (event.type === "response_done") {
          final = event.response;
        }
      }
      if (final === undefined) throw new Error("the model's stream ended without its response");
      return { response: JSON.parse(JSON.stringify(final)), deltas };
    }, { name: "model" });
    events.seq = base + done.deltas;
    yield { type: "response_done", response: done.response } as StreamEvent;
  }
}

/** Models named by a string resolve with `base` (the OpenAI provider) and are made durable. */
class DurableModelProvider implements ModelProvider {
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
function durableAgent(agent: Agent<any, any>, made = new Map<Agent<any, any>, Agent<any, any>>()): Agent<any, any> {
  const known = made.get(agent);
  if (known) return known;
  const model = agent.model;
  const durable = agent.clone({ tools: agent.tools.map(durableTool) });
  made.set(agent, durable);
  if (typeof model !== "string") durable.model = new DurableModel(model);
  durable.handoffs = agent.handoffs.map((h) => (h instanceof Agent ? durableAgent(h, made) : h));
  return durable;
}

// --- the workflow ----------------------------------------------------------------------------

/** A run's input as DBOS records it (plain data: the agent by name; a resumed run's state as its string). */
interface RunSpec {
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
  /** The run's session, by its id (`session.getSessionId()`): the caller's object here, else the factory's. */
  sessionId?: string;
}

/** A tool call waiting for a human's decision. `deadline` (epoch seconds): when it is rejected unless decided. */
export interface Approval {
  callId: string;
  tool: string;
  arguments: string;
  deadline?: number;
}

type Usage4 = { requests: number; inputTokens: number; outputTokens: number; totalTokens: number };

interface RunOutput {
  status: "completed" | "interrupted";
  output: unknown;
  usage: Usage4;
  interruptions?: Approval[];
}

/** A decision sent to a waiting run (`approveToolCall`, `rejectToolCall`). */
interface Decision {
  type: "approve" | "reject";
  callId: string;
  always?: boolean;
  arguments?: string;
  message?: string;
  decidedBy?: string;
}

/** The run's events (DBOS's durable key-value per workflow): its saved state while it is interrupted,
 * and the tool calls it waits on while it waits for decisions. */
const STATE_EVENT = "timestep.run_state";
const WAITING_EVENT = "timestep.waiting";
const DECISION_TOPIC = "timestep.decision";
/** The longest one wait for a decision lasts before it is taken up again (each wait is recorded). */
const DECISION_WAIT_SECONDS = 3600;

function usageOf(state: RunState<any, any>): Usage4 {
  const u = state.usage;
  return { requests: u.requests, inputTokens: u.inputTokens, outputTokens: u.outputTokens, totalTokens: u.totalTokens };
}

function approvalsOf(state: RunState<any, any>, timeoutSeconds?: number): Approval[] {
  const deadline = timeoutSeconds ? Date.now() / 1000 + timeoutSeconds : undefined;
  return state.getInterruptions().map((item) => ({
    callId: (item.rawItem as { callId?: string }).callId ?? "",
    tool: item.name ?? "",
    arguments: item.arguments ?? "",
    ...(deadline === undefined ? {} : { deadline }),
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
async function awaitDecisions(state: RunState<any, any>, waiting: Approval[]): Promise<void> {
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
    if (events && decided.length) {
      const seq = events.take(decided.length);
      await DBOS.runStep(async () => {
        for (const [i, { type, ...fields }] of decided.entries()) await events.emit(seq + i, type as string, fields);
      }, { name: "run.decision" });
    }
    await DBOS.setEvent(WAITING_EVENT, [...pending.values()]);
  }
}

const agentRun = DBOS.registerWorkflow(async (spec: RunSpec): Promise<RunOutput> => {
  if (spec.seqBase === undefined) {
    try {
      return await execute(spec);
    } finally {
      liveSessions.delete(DBOS.workflowID!);
    }
  }
  const events = new RunEvents(DBOS.workflowID!, spec.seqBase);
  busRuns.set(events.runId, events);
  try {
    const started = events.take(1);
    await DBOS.runStep(() => events.emit(started, "started"), { name: "run.started" });
    let output: RunOutput;
    try {
      output = await execute(spec);
      if (output.status === "interrupted") {
        throw new ValidationError("tool", "approvals are not built for TypeScript agent actors yet", "host agents whose tools need no approval");
      }
    } catch (e) {
      if (stoppedByDBOS(e) && (await statusOutside(events.runId)) === "CANCELLED") {
        // Cancelled: no step runs after a cancel, so `cancelled` is published as it is (a replay's copy
        // is dropped by its message id).
        await events.emit(events.take(1), "cancelled");
        throw e;
      }
      const failed = events.take(1);
      const error = { type: (e as Error).name || "Error", message: (e as Error).message ?? String(e) };
      await DBOS.runStep(() => events.emit(failed, "failed", { error }), { name: "run.failed" });
      throw e;
    }
    const completed = events.take(1);
    const usage = { requests: output.usage.requests, input_tokens: output.usage.inputTokens, output_tokens: output.usage.outputTokens, total_tokens: output.usage.totalTokens };
    await DBOS.runStep(() => events.emit(completed, "completed", { output: output.output ?? null, usage }), { name: "run.completed" });
    return output;
  } finally {
    busRuns.delete(events.runId);
  }
}, { name: WORKFLOW });

// --- sessions ----------------------------------------------------------------------------------

const liveSessions = new Map<string, Session>();
let sessionFactory: ((sessionId: string) => Session | Promise<Session>) | undefined;

/** How this process makes a run's session again from its id, for a run that resumes here after a crash (the
 * caller's session object died with its process). Register it at start-up, before `ensureDBOSLaunched()`. */
export function registerSessionFactory(factory: (sessionId: string) => Session | Promise<Session>): void {
  if (typeof factory !== "function") throw new ValidationError("factory", "is not a function", "pass (sessionId) => new MySession(sessionId)");
  sessionFactory = factory;
}

/** `inner` with each read and write a step (`session.get_items`, `session.add_items`, `session.pop_item`,
 * `session.clear`): a recovered run reads what its first execution read, and writes nothing twice. */
function durableSession(inner: Session, sessionId: string): Session {
  const step = <T>(name: string, fn: () => Promise<T>) => DBOS.runStep(async () => {
    const value = await fn();
    return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
  }, { name });
  return {
    getSessionId: async () => sessionId,
    getItems: (limit?: number) => step("session.get_items", () => inner.getItems(limit)),
    addItems: (items: AgentInputItem[]) => step("session.add_items", () => inner.addItems(items)),
    popItem: () => step("session.pop_item", () => inner.popItem()),
    clearSession: () => step("session.clear", () => inner.clearSession()),
    ...(inner.prepareHistoryItemForModelInput ? { prepareHistoryItemForModelInput: inner.prepareHistoryItemForModelInput.bind(inner) } : {}),
    ...(inner.prepareHistoryItemsForPersistenceComparison
      ? { prepareHistoryItemsForPersistenceComparison: inner.prepareHistoryItemsForPersistenceComparison.bind(inner) } : {}),
  } as Session;
}

async function sessionOf(runId: string, sessionId: string): Promise<Session> {
  const inner = liveSessions.get(runId) ?? (sessionFactory ? await sessionFactory(sessionId) : undefined);
  if (!inner) {
    throw new ConfigurationError(
      `session: run ${JSON.stringify(runId)} uses session ${JSON.stringify(sessionId)}, which this process cannot make again; ` +
      "call registerSessionFactory((id) => ...) at start-up, before ensureDBOSLaunched()",
    );
  }
  return durableSession(inner, sessionId);
}

/** The run itself: the agent's turns, each model call and tool call a step, and its approvals. */
async function execute(spec: RunSpec): Promise<RunOutput> {
  const agent = agents.get(spec.agent);
  if (!agent) {
    throw new UnknownAgentError(
      `agent: no agent named ${JSON.stringify(spec.agent)} is registered in this process; ` +
      "call registerAgent(agent) at start-up, before ensureDBOSLaunched()",
    );
  }
  const durable = durableAgent(agent);
  const runner = new Runner({ tracingDisabled: true, modelProvider: new DurableModelProvider(new OpenAIProvider()) });
  let input: string | AgentInputItem[] | RunState<any, any> = spec.state !== undefined ? await RunState.fromString(durable, spec.state) : spec.input!;
  let saved = spec.state !== undefined;
  const runId = DBOS.workflowID!;
  const session = spec.sessionId === undefined ? undefined : await sessionOf(runId, spec.sessionId);
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
    await awaitDecisions(result.state, waiting);
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

/** A run started before, in this process or another: its status and, once it ends, its result. */
export class RunHandle {
  constructor(readonly workflowId: string) {}

  /** Wait for the run to end: its result, or the error it ended with. */
  async getResult(): Promise<RunResult> {
    const done = (await DBOS.retrieveWorkflow<RunOutput>(this.workflowId).getResult()) as RunOutput;
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

function checkRunId(field: string, id: unknown): void {
  if (typeof id !== "string" || id.length < 1 || id.length > 200 || /[\u0000-\u001f\u007f]/.test(id)) {
    throw new ValidationError(field, `${JSON.stringify(id)} is not a run id`, "give 1-200 characters without control characters, or none");
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

/** Start the run a governor handed on (`<prefix>.runs.start.typescript`) as workflow `runId`, its events
 * numbered from `seqBase + 1`; a second start of the same id is the same run. For `serveAgents`. */
export async function startBusRun(
  runId: string, agent: string, input: string | AgentInputItem[], maxTurns: number, seqBase: number,
  timeoutSeconds?: number | null, context?: unknown, approvalTimeoutSeconds?: number | null, stream = false,
): Promise<void> {
  await ensureDBOSLaunched();
  // A run from the bus waits for its approvals (approve and reject come over the bus), as on the Python side.
  const spec: RunSpec = {
    agent, input, maxTurns, seqBase, waitForApproval: true, ...(stream ? { stream } : {}),
    ...(approvalTimeoutSeconds ? { approvalTimeoutSeconds } : {}),
    ...(context === undefined || context === null ? {} : { context }),
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
async function prepare(
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
  const { waitForApproval = false, approvalTimeoutSeconds, ...unknown } = options ?? {};
  const stray = Object.keys(unknown);
  if (stray.length) throw new ValidationError(`options.${stray[0]}`, "is not an option", "use waitForApproval or approvalTimeoutSeconds");
  if (typeof waitForApproval !== "boolean") throw new ValidationError("options.waitForApproval", `${JSON.stringify(waitForApproval)} is not true or false`, "pass a boolean");
  if (approvalTimeoutSeconds !== undefined) {
    if (!waitForApproval) throw new ValidationError("options.approvalTimeoutSeconds", "applies only to a run that waits for approval", "pass waitForApproval: true with it, or leave it out");
    if (!(typeof approvalTimeoutSeconds === "number" && approvalTimeoutSeconds > 0 && approvalTimeoutSeconds <= 31_536_000)) {
      throw new ValidationError("options.approvalTimeoutSeconds", `${approvalTimeoutSeconds} is not a number of seconds from 0 to 365 days`, "give e.g. 3600, or none");
    }
  }
  await ensureDBOSLaunched();
  const spec: RunSpec = {
    agent: agent.name, maxTurns, ...(sessionId === undefined ? {} : { sessionId }),
    ...(resumed ? { state: inputItems.toString() } : { input: inputItems }),
    ...(context === undefined ? {} : { context }),
    ...(waitForApproval ? { waitForApproval } : {}),
    ...(approvalTimeoutSeconds === undefined ? {} : { approvalTimeoutSeconds }),
  };
  const id = workflowId ?? crypto.randomUUID().replaceAll("-", "");
  if (session) liveSessions.set(id, session as Session);  // this process's own object; a recovery asks the factory
  return { id, spec, ...(timeoutSeconds ? { timeoutMS: timeoutSeconds * 1000 } : {}) };
}

// --- queues ----------------------------------------------------------------------------------

/** The queue a run without `queueName` joins; as on the Python side, 50 runs a minute. */
export const DEFAULT_QUEUE = "default";
const DEFAULT_LIMIT = 50;
const DEFAULT_PERIOD_SECONDS = 60;
/** A run without a priority runs after every prioritised one (priorities are 1 to LOWEST_PRIORITY - 1). */
const LOWEST_PRIORITY = 2 ** 31 - 1;

/** How a queue admits runs: at most `limit` starts per `periodSeconds` (the provider's requests per period),
 * and at most `concurrency` runs at once (across processes) or `workerConcurrency` in one process. */
export interface QueuePolicy {
  limit?: number;
  periodSeconds?: number;
  concurrency?: number;
  workerConcurrency?: number;
}

function checkCount(field: string, value: unknown, fix: string): void {
  if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 1_000_000)) {
    throw new ValidationError(field, `${JSON.stringify(value)} is not a whole number from 1 to 1000000`, fix);
  }
}

function checkQueueName(field: string, name: unknown): void {
  if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    throw new ValidationError(field, `${JSON.stringify(name)} is not a queue name`, "use 1-64 characters of A-Z, a-z, 0-9, '_' and '-'");
  }
}

function queueParameters(policy: QueuePolicy) {
  const { limit, periodSeconds, concurrency, workerConcurrency, ...unknown } = policy ?? {};
  const stray = Object.keys(unknown);
  if (stray.length) throw new ValidationError(`policy.${stray[0]}`, "is not a queue setting", "use limit, periodSeconds, concurrency or workerConcurrency");
  checkCount("policy.limit", limit, "give the runs the queue may start per period, e.g. 50");
  if (periodSeconds !== undefined && !(typeof periodSeconds === "number" && periodSeconds > 0 && periodSeconds <= 86_400)) {
    throw new ValidationError("policy.periodSeconds", `${JSON.stringify(periodSeconds)} is not a number of seconds from 0 to 86400`, "give e.g. 60");
  }
  if ((limit === undefined) !== (periodSeconds === undefined)) {
    throw new ValidationError(limit === undefined ? "policy.limit" : "policy.periodSeconds", "is given without the other", "give limit and periodSeconds together (a rate: limit runs per periodSeconds)");
  }
  checkCount("policy.concurrency", concurrency, "give the most runs of the queue at once, or none");
  checkCount("policy.workerConcurrency", workerConcurrency, "give the most runs of the queue at once in one process, or none");
  return {
    ...(limit === undefined ? {} : { rateLimit: { limitPerPeriod: limit, periodSec: periodSeconds! } }),
    ...(concurrency === undefined ? {} : { globalConcurrency: concurrency }),
    ...(workerConcurrency === undefined ? {} : { workerConcurrency }),
  };
}

/** Set how queue `name` admits runs, for every process on the database (stored with the queue; a queue
 * named by a run before it was configured has 50 runs a minute). */
export async function configureQueue(name: string, policy: QueuePolicy): Promise<void> {
  checkQueueName("name", name);
  const params = queueParameters(policy);
  await ensureDBOSLaunched();
  await DBOS.registerQueue(name, { ...params, onConflict: "always_update" });
}

const known = new Set<string>();

/** The queue, made with the default policy the first time it is named (an operator's settings kept). */
async function ensureQueue(name: string): Promise<void> {
  if (known.has(name)) return;
  await DBOS.registerQueue(name, { rateLimit: { limitPerPeriod: DEFAULT_LIMIT, periodSec: DEFAULT_PERIOD_SECONDS }, onConflict: "never_update" });
  known.add(name);
}

/** What a queued run does beyond the guide's positional arguments. */
export interface QueueRunOptions extends RunOptions {
  /** A `deduplicationId` still queued or running: `error` (default) throws DuplicateRunError, `return`
   * gives that run's handle. */
  onDuplicate?: "error" | "return";
}

/**
 * Queue a durable run and return its handle at once; a process of this application on the database starts
 * it when its queue admits it (the default queue: 50 runs per 60 s; see `configureQueue`). A lower `priority`
 * (1 and up) runs first; a run without one runs after every prioritised run. A `deduplicationId` still queued
 * or running throws `DuplicateRunError`, or with `onDuplicate: "return"` gives the existing run's handle.
 */
export async function queueAgentWorkflow(
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[] | RunState<any, any>,
  session?: unknown,
  stream = false,
  queueName?: string,
  priority?: number,
  deduplicationId?: string,
  workflowId?: string,
  timeoutSeconds?: number,
  options: QueueRunOptions = {},
): Promise<RunHandle> {
  const queue = queueName ?? DEFAULT_QUEUE;
  checkQueueName("queueName", queue);
  if (priority !== undefined && !(Number.isInteger(priority) && priority >= 1 && priority <= LOWEST_PRIORITY - 1)) {
    throw new ValidationError("priority", `${JSON.stringify(priority)} is not a whole number from 1 to ${LOWEST_PRIORITY - 1}`, "give 1 for the most urgent, or none to run after prioritised runs");
  }
  if (deduplicationId !== undefined) checkRunId("deduplicationId", deduplicationId);
  const { onDuplicate = "error", ...runOptions } = options ?? {};
  if (onDuplicate !== "error" && onDuplicate !== "return") {
    throw new ValidationError("options.onDuplicate", `${JSON.stringify(onDuplicate)} is not "error" or "return"`, "choose what a duplicate deduplicationId does");
  }
  const { id, spec, timeoutMS } = await prepare(agent, inputItems, session, stream, timeoutSeconds, DEFAULT_MAX_TURNS, undefined, workflowId, runOptions);
  await ensureQueue(queue);
  try {
    await DBOS.startWorkflow(agentRun, {
      workflowID: id, queueName: queue, ...(timeoutMS ? { timeoutMS } : {}),
      enqueueOptions: { priority: priority ?? LOWEST_PRIORITY, ...(deduplicationId === undefined ? {} : { deduplicationID: deduplicationId }) },
    })(spec);
  } catch (e) {
    if (!(e instanceof DBOSErrors.DBOSQueueDuplicatedError)) throw e;
    const existing = (await DBOS.listWorkflows({ queueName: queue, status: ["ENQUEUED", "PENDING"] })).find((w) => w.deduplicationID === deduplicationId);
    if (onDuplicate === "return" && existing) return new RunHandle(existing.workflowID);
    throw new DuplicateRunError(
      `deduplicationId: a run with ${JSON.stringify(deduplicationId)} is still queued or running on ${JSON.stringify(queue)}` +
        `${existing ? ` (${existing.workflowID})` : ""}; wait for it, or pass onDuplicate: "return" for its handle`,
      existing?.workflowID ?? "", deduplicationId!,
    );
  }
  return new RunHandle(id);
}

// --- approvals -------------------------------------------------------------------------------

/** The saved state of an interrupted run, as the Python side's `RunStateStore`: load it, approve or
 * reject its interruptions, and pass it to `runAgentWorkflow` to go on. A run saves it by itself when it
 * is interrupted (and clears it when it completes). */
export class RunStateStore<A extends Agent<any, any> = Agent<any, any>> {
  readonly agent: A;
  readonly workflowId: string;

  constructor({ agent, workflowId }: { agent: A; workflowId: string }) {
    if (!(agent instanceof Agent)) throw new ValidationError("agent", "is not an Agent of @openai/agents", "pass the agent the state belongs to");
    checkRunId("workflowId", workflowId);
    this.agent = agent;
    this.workflowId = workflowId;
  }

  /** The saved state, ready to approve or reject and resume; undefined when nothing is saved. */
  async load(): Promise<RunState<any, A> | undefined> {
    await ensureDBOSLaunched();
    const saved = await DBOS.getEvent<string | null>(this.workflowId, STATE_EVENT, 0);
    if (typeof saved !== "string") return undefined;
    return RunState.fromString(this.agent, saved);
  }
}

/** The tool calls a run waiting for approval (`waitForApproval`) still waits on. */
export async function pendingApprovals(workflowId: string): Promise<Approval[]> {
  checkRunId("workflowId", workflowId);
  await ensureDBOSLaunched();
  const status = await DBOS.getWorkflowStatus(workflowId);
  if (!status) throw new UnknownRunError(`workflowId: no run ${JSON.stringify(workflowId)}; check the id`);
  if (!["PENDING", "ENQUEUED"].includes(status.status)) return [];
  return (await DBOS.getEvent<Approval[]>(workflowId, WAITING_EVENT, 0)) ?? [];
}

async function decide(workflowId: string, decision: Decision): Promise<void> {
  checkRunId("workflowId", workflowId);
  if (typeof decision.callId !== "string" || !decision.callId) {
    throw new ValidationError("callId", `${JSON.stringify(decision.callId)} is not a tool call id`, "pass the callId of one of the run's interruptions");
  }
  if (decision.always !== undefined && typeof decision.always !== "boolean") {
    throw new ValidationError("always", `${JSON.stringify(decision.always)} is not true or false`, "pass a boolean, or leave it out");
  }
  if (decision.arguments !== undefined) {
    let parsed: unknown;
    try {
      parsed = typeof decision.arguments === "string" ? JSON.parse(decision.arguments) : undefined;
    } catch {
      parsed = undefined;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ValidationError("arguments", `${JSON.stringify(decision.arguments)} is not a JSON object`, "pass the tool's arguments as a JSON object string, e.g. '{\"city\": \"Paris\"}'");
    }
  }
  const waiting = await pendingApprovals(workflowId);
  if (!waiting.some((a) => a.callId === decision.callId)) {
    const status = (await DBOS.getWorkflowStatus(workflowId))!.status;
    const why = !["PENDING", "ENQUEUED"].includes(status)
      ? `run ${JSON.stringify(workflowId)} has ended (${status.toLowerCase()})`
      : waiting.length
        ? `run ${JSON.stringify(workflowId)} waits for ${waiting.map((a) => JSON.stringify(a.callId)).join(", ")}, not ${JSON.stringify(decision.callId)}`
        : `run ${JSON.stringify(workflowId)} is not waiting for a decision (it is not interrupted, or did not ask to wait: waitForApproval)`;
    throw new NotWaitingError(`callId: ${why}; check pendingApprovals(workflowId)`);
  }
  // One decision per call and kind: sending the same one twice delivers it once.
  await DBOS.send(workflowId, decision, DECISION_TOPIC, `${workflowId}.${decision.callId}.${decision.type}`);
}

/** Approve a tool call a run waits on (`waitForApproval`), perhaps with edited `arguments` (a JSON object
 * string) or `always` (every later call of that tool in the run too); the run goes on with it. */
export async function approveToolCall(
  workflowId: string, callId: string, options: { arguments?: string; always?: boolean; decidedBy?: string } = {},
): Promise<void> {
  await decide(workflowId, { type: "approve", callId, ...options });
}

/** Reject a tool call a run waits on; the model is told `message` (default: the SDK's) and the run goes on. */
export async function rejectToolCall(
  workflowId: string, callId: string, options: { message?: string; always?: boolean; decidedBy?: string } = {},
): Promise<void> {
  await decide(workflowId, { type: "reject", callId, ...options });
}

export { serveAgents, type AgentActor, type ServeOptions } from "./actor.js";
