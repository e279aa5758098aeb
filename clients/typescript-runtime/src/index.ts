/**
 * Durable runs of OpenAI Agents SDK agents written in TypeScript, as Timestep's Python library runs
 * Python agents: `runAgentWorkflow` runs an agent as a DBOS workflow in which each model call and each
 * function tool call is a recorded step. After a crash, the run resumes in the next process that
 * launches with the same executor id: what finished comes back from the record and is not called again.
 *
 * DBOS's TypeScript SDK stores runs in PostgreSQL only (PG_CONNECTION_URI).
 */

import { DBOS } from "@dbos-inc/dbos-sdk";
import {
  Agent, OpenAIProvider, Runner, Usage,
  type AgentInputItem, type FunctionTool, type Model, type ModelProvider, type ModelRequest, type ModelResponse, type StreamEvent, type Tool,
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
  await DBOS.shutdown();
  launched = false;
}

// --- agents ----------------------------------------------------------------------------------

const agents = new Map<string, Agent<any, any>>();

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

  // eslint-disable-next-line require-yield
  async *getStreamedResponse(_request: ModelRequest): AsyncIterable<StreamEvent> {
    throw new ValidationError("stream", "streaming is not built for TypeScript agents yet", "run with stream false");
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
  return { ...inner, invoke: (context, input, details) => DBOS.runStep(() => inner.invoke(context, input, details), { name: `tool:${inner.name}` }) };
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

/** A run's input as DBOS records it (plain data: the agent by name). */
interface RunSpec {
  agent: string;
  input: string | AgentInputItem[];
  maxTurns: number;
  context?: unknown;
}

interface RunOutput {
  output: unknown;
  usage: { requests: number; inputTokens: number; outputTokens: number; totalTokens: number };
}

const agentRun = DBOS.registerWorkflow(async (spec: RunSpec): Promise<RunOutput> => {
  const agent = agents.get(spec.agent);
  if (!agent) {
    throw new UnknownAgentError(
      `agent: no agent named ${JSON.stringify(spec.agent)} is registered in this process; ` +
      "call registerAgent(agent) at start-up, before ensureDBOSLaunched()",
    );
  }
  const runner = new Runner({ tracingDisabled: true, modelProvider: new DurableModelProvider(new OpenAIProvider()) });
  const result = await runner.run(durableAgent(agent), spec.input, { maxTurns: spec.maxTurns, context: spec.context });
  const usage = result.state.usage;
  return {
    output: result.finalOutput,
    usage: { requests: usage.requests, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, totalTokens: usage.totalTokens },
  };
}, { name: WORKFLOW });

/** What `runAgentWorkflow` returns, as `RunResult` on the Python side. */
export interface RunResult {
  workflowId: string;
  status: "completed";
  output: unknown;
  usage: RunOutput["usage"];
}

/** A run started before, in this process or another: its status and, once it ends, its result. */
export class RunHandle {
  constructor(readonly workflowId: string) {}

  /** Wait for the run to end: its result, or the error it ended with. */
  async getResult(): Promise<RunResult> {
    const done = (await DBOS.retrieveWorkflow<RunOutput>(this.workflowId).getResult()) as RunOutput;
    return { workflowId: this.workflowId, status: "completed", output: done.output, usage: done.usage };
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

/** `runAgentWorkflow(agent, inputItems, session?, stream?, timeoutSeconds?, maxTurns = 10, context?, workflowId?)`
 * without waiting: the run's handle once it has started. */
export async function startAgentWorkflow(
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[],
  session?: unknown,
  stream = false,
  timeoutSeconds?: number,
  maxTurns: number = DEFAULT_MAX_TURNS,
  context?: unknown,
  workflowId?: string,
): Promise<RunHandle> {
  registerAgent(agent);
  if (typeof inputItems !== "string" && !Array.isArray(inputItems)) {
    throw new ValidationError("inputItems", "is neither a string nor a list of input items", "pass the user's text, or a list of items");
  }
  if (session !== undefined && session !== null) {
    throw new ValidationError("session", "sessions are not built for TypeScript agents yet", "pass undefined, and keep the conversation in inputItems");
  }
  if (stream) throw new ValidationError("stream", "streaming is not built for TypeScript agents yet", "pass false");
  if (timeoutSeconds !== undefined && !(typeof timeoutSeconds === "number" && timeoutSeconds > 0 && timeoutSeconds <= 31_536_000)) {
    throw new ValidationError("timeoutSeconds", `${timeoutSeconds} is not a number of seconds from 0 to 365 days`, "give e.g. 600, or none");
  }
  if (!Number.isInteger(maxTurns) || maxTurns < 1) {
    throw new ValidationError("maxTurns", `${maxTurns} is not a whole number of turns`, "give 1 or more");
  }
  if (workflowId !== undefined) checkRunId("workflowId", workflowId);
  await ensureDBOSLaunched();
  const id = workflowId ?? crypto.randomUUID().replaceAll("-", "");
  const spec: RunSpec = { agent: agent.name, input: inputItems, maxTurns, ...(context === undefined ? {} : { context }) };
  await DBOS.startWorkflow(agentRun, { workflowID: id, ...(timeoutSeconds ? { timeoutMS: timeoutSeconds * 1000 } : {}) })(spec);
  return new RunHandle(id);
}
