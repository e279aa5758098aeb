/**
 * The TypeScript client of the bus, mirroring timestep/client.py: submit runs, follow their events,
 * approve, reject, cancel, and manage schedules and queues, from any process that can reach NATS.
 *
 * @example
 * const client = await Client.connect({ servers: "nats://127.0.0.1:4222" });
 * const run = await client.submit("assistant", "What's the weather in Paris?");
 * for await (const event of run.events()) console.log(event.seq, event.type);
 * const completed = await run.result({ timeoutSeconds: 60 });
 */

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ConnectionError,
  headers as natsHeaders,
  NoRespondersError,
  RequestError,
  TimeoutError,
  type NatsConnection,
} from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, type ConsumerMessages, type JetStreamClient } from "@nats-io/jetstream";
import type {
  Accepted,
  Approval,
  ApprovalRecord,
  Completed,
  ErrorInfo,
  LiveText,
  QueueStatus,
  Rejected,
  Reply,
  RunInfo,
  RunStep,
  RunEvent,
  RunRequest,
  Schedule,
  TokenUsage,
} from "./contract.js";
import { openConnection, resolveSettings, type ConnectOptions } from "./connect.js";
import {
  RequestRefusedError,
  RunCancelledError,
  RunFailedError,
  RunRejectedError,
  TimestepError,
  ValidationError,
  WaitTimeoutError,
} from "./errors.js";
import { EVENTS_STREAM, Subjects, type ControlAction } from "./subjects.js";
import * as check from "./validate.js";

/** Events after which a run has no more: its event stream ends there. */
export const TERMINAL_TYPES: ReadonlySet<RunEvent["type"]> = new Set(["completed", "failed", "cancelled", "rejected"]);

/** How long `submit` waits for the governor's answer before sending the request again (as the Python client). */
const RESEND_SECONDS = 2;
/** How long approve, reject and cancel wait for an agent actor's answer (as the Python client). */
const CONTROL_TIMEOUT_SECONDS = 10;

export interface ControlOptions {
  /**
   * Wait for an agent actor's answer (default true): the call returns once the run took it, and throws
   * RequestRefusedError when it was refused. With false the command is only stored: an agent actor acts on it
   * when one runs, and a refusal goes to the dead letters.
   */
  wait?: boolean;
}

export interface ApproveOptions extends ControlOptions {
  /** Approve every call of this tool for the rest of the run. */
  always?: boolean;
  /** Run the tool with these arguments (a JSON object as a string) instead of the model's. */
  arguments?: string;
  /** Who decides, kept with the decision (the NATS user instead, where the server names it). */
  decidedBy?: string;
}

export interface RejectOptions extends ControlOptions {
  /** Reject every call of this tool for the rest of the run. */
  always?: boolean;
  /** Who decides, kept with the decision. */
  decidedBy?: string;
}

export interface ApprovalFilter {
  /** "pending" (default), "decided" (the audit trail) or "all". */
  status?: "pending" | "decided" | "all";
  runId?: string;
  agent?: string;
  tool?: string;
  queue?: string;
  /** Only approvals requested at least this many seconds ago. */
  olderThanSeconds?: number;
  /** Only approvals requested at most this many seconds ago. */
  newerThanSeconds?: number;
  /** At most this many (default 100). */
  limit?: number;
}

export interface SubmitOptions {
  /** The run id (1-128 of [A-Za-z0-9_-]); also the request's Nats-Msg-Id. Default: a fresh random id. */
  id?: string;
  /** Conversation memory: runs with the same session id share it. */
  sessionId?: string;
  /**
   * With `sessionId`, when another run of the session is unfinished (running, waiting for its turn or
   * for approval): `enqueue` (default) waits for it in order of arrival, `reject` is refused
   * (`RunRejectedError`, `error.type` `SessionBusy`, naming the unfinished run), `interrupt` cancels it.
   */
  sessionPolicy?: "enqueue" | "reject" | "interrupt";
  /** Wait in this queue (priority, rate limit, concurrency); without one the run starts at once. */
  queue?: string;
  /** With `queue`: lower runs first (1 to 2,147,483,646); without one, after every prioritised run. */
  priority?: number;
  /** With `queue`: a request whose deduplication id is still queued or running is rejected. */
  deduplicationId?: string;
  /** Cancel the run when it takes longer. */
  timeoutSeconds?: number;
  /** Publish `delta` events with the model's text as it is produced. */
  stream?: boolean;
  metadata?: Record<string, string>;
  /** The run's model-token budget: it fails with `BudgetExceeded` after the model call that crosses it. */
  maxTokens?: number;
  /** How the run's failed model calls are retried (over its queue's, its agent's and the deployment's). */
  modelRetry?: ModelRetryOptions;
  /** A deadline for each approval the run waits for: a call still undecided this long after it was requested is rejected. */
  approvalTimeoutSeconds?: number;
  /**
   * The run context (the Agents SDK's `context=`): a JSON object the run's tools, guardrails and
   * instructions see as `ctx.context`. Their changes survive a crash; the `completed` event carries it as the run left it.
   */
  context?: Record<string, unknown>;
  /** How long to wait for the governor's `accepted` (default 10 s). No answer is not an error: see `Run.accepted`. */
  replyTimeoutSeconds?: number;
  /** W3C trace context to continue (`00-<32 hex>-<16 hex>-<2 hex>`); default: a new trace. Every event carries it. */
  traceparent?: string;
}

/** A run request: the agent, its input, and the submit options that travel with it. */
export interface RunRequestInput extends Omit<SubmitOptions, "replyTimeoutSeconds" | "traceparent"> {
  agent: string;
  input: string | Record<string, unknown>[];
}

export interface EventsOptions {
  /** Replay the stored events first (default: true for one run, false for every run's). */
  fromStart?: boolean;
  /** Stop following when aborted. */
  signal?: AbortSignal;
}

export interface WaitOptions {
  /** Give up waiting after this long (the run goes on); default: wait as long as it takes. */
  timeoutSeconds?: number;
}

/** What `runAgentWorkflow` returns, as `RunResult` on the Python side. */
export interface RunResult {
  workflowId: string;
  /** `interrupted`: a tool call waits for `approve` or `reject`; then `getResult()` again. */
  status: "completed" | "interrupted";
  output: unknown;
  interruptions: Approval[];
  usage?: TokenUsage;
}

export interface QueuePolicy {
  /** At most `limit` runs start in any rolling `periodSeconds`. */
  limit?: number;
  periodSeconds?: number;
  /** At most this many of the queue's runs at once. */
  concurrency?: number;
  /** A run waits to start while the queue's runs used this many model tokens or more in the last period. */
  tokensPerPeriod?: number;
  /** The token budget of each of the queue's runs that sets no `maxTokens`. */
  maxTokensPerRun?: number;
  /** How the queue's runs retry failed model calls (a run's own settings win, field by field). */
  modelRetry?: ModelRetryOptions;
}

/** Retry settings of failed model calls (408, 409, 429, 5xx, no connection); a field left out keeps the next level's. */
export interface ModelRetryOptions {
  /** Calls per model turn, the first included (1: no retries). */
  maxAttempts?: number;
  /** The waits between a turn's attempts add up to at most this. */
  maxWaitSeconds?: number;
  /** The first backoff wait when the provider names none, doubled per attempt. */
  backoffSeconds?: number;
  /** The longest backoff wait. */
  maxBackoffSeconds?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = (body: unknown): Uint8Array => encoder.encode(JSON.stringify(body));
const decode = <T>(data: Uint8Array): T => JSON.parse(decoder.decode(data)) as T;

function jsonHeaders(msgId?: string, traceparent?: string) {
  const h = natsHeaders();
  h.set("Content-Type", "application/json");
  if (msgId) h.set("Nats-Msg-Id", msgId);
  if (traceparent) h.set("traceparent", traceparent);
  return h;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** The trace context a run request is sent with: the caller's, checked, or a new sampled trace. */
function traceContext(traceparent: string | undefined): string {
  if (traceparent === undefined) return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
  const value = typeof traceparent === "string" ? traceparent.trim().toLowerCase() : "";
  const match = TRACEPARENT.exec(value);
  if (!match || /^0+$/.test(match[1]) || /^0+$/.test(match[2])) {
    throw new ValidationError(
      "traceparent",
      `'${traceparent}' is not a W3C traceparent`,
      "pass '00-<32 hex trace id>-<16 hex span id>-<2 hex flags>', or none to start a new trace",
    );
  }
  return value;
}

/**
 * The error of a `rejected` submit answer: the governor sends it as JetStream's API error
 * (`{code: 400, description}`; 409 for `SessionBusy`), so the JetStream publish of any NATS client
 * raises with it, and the field at fault beside it, as the answer's top-level `field`.
 */
function submitError(error: ErrorInfo | { code?: number; description?: string }, field?: unknown): ErrorInfo {
  if ("type" in error && typeof error.type === "string") return error as ErrorInfo;
  const answer = error as { code?: number; description?: string };
  // 409: refused by its session policy (`reject`), the session has an unfinished run.
  const type = answer.code === 409 ? "SessionBusy" : "InvalidRequest";
  const message = String(answer.description ?? "rejected");
  return typeof field === "string" ? { type, message, field } : { type, message };
}

/**
 * A refusal from the bus with the field named as this client's caller names it: the field at fault
 * (`error.field`, snake_case as on the wire) starts the message, and becomes camelCase there
 * (`period_seconds: ...` reads `periodSeconds: ...`).
 */
export function asGiven(error: ErrorInfo): ErrorInfo {
  const named = error.field;
  if (!named || !error.message.startsWith(`${named}: `)) return error;
  const field = named.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  return { ...error, message: field + error.message.slice(named.length) };
}

function noAnswer(error: unknown): boolean {
  return (
    error instanceof TimeoutError ||
    error instanceof NoRespondersError ||
    (error instanceof RequestError && (error.isNoResponders() || error.cause instanceof TimeoutError))
  );
}

/** The JSON body of a run request, with every field checked first (names as the caller wrote them). */
export function buildRunRequest(request: RunRequestInput, field = ""): RunRequest {
  const f = (name: string) => field + name;
  if (request === null || typeof request !== "object") throw new TimestepError(`${field || "request"}: must be an object`);
  const body: RunRequest = {
    agent: check.key(f("agent"), request.agent),
    input: check.input(f("input"), request.input),
  };
  if (request.id !== undefined) body.id = check.runId(f("id"), request.id);
  if (request.sessionId !== undefined) body.session_id = check.key(f("sessionId"), request.sessionId);
  if (request.queue !== undefined) body.queue = check.name(f("queue"), request.queue);
  if (request.priority !== undefined) body.priority = check.priority(f("priority"), request.priority);
  if (request.deduplicationId !== undefined) {
    body.deduplication_id = check.key(f("deduplicationId"), request.deduplicationId);
  }
  if (request.timeoutSeconds !== undefined) body.timeout_seconds = check.seconds(f("timeoutSeconds"), request.timeoutSeconds);
  if (request.stream !== undefined) body.stream = check.boolean(f("stream"), request.stream);
  if (request.metadata !== undefined) body.metadata = check.metadata(f("metadata"), request.metadata);
  if (request.maxTokens !== undefined) body.max_tokens = check.count(f("maxTokens"), request.maxTokens);
  if (request.modelRetry !== undefined) body.model_retry = check.modelRetry(f("modelRetry"), request.modelRetry);
  if (request.approvalTimeoutSeconds !== undefined) {
    body.approval_timeout_seconds = check.seconds(f("approvalTimeoutSeconds"), request.approvalTimeoutSeconds);
  }
  if (request.sessionPolicy !== undefined) body.session_policy = check.sessionPolicy(f("sessionPolicy"), request.sessionPolicy);
  if (request.context !== undefined) body.context = check.jsonObject(f("context"), request.context);
  return body;
}

/**
 * A submitted run: `runId` (also `workflowId`), its `accepted` event (undefined when no governor
 * answered in time: the request is stored and runs when one is up), `events()`, `result()`, `getResult()`;
 * `traceparent`, the W3C trace context it was sent with (its events carry the same trace id).
 */
export class Run {
  constructor(
    readonly client: Client,
    readonly runId: string,
    readonly accepted: Accepted | undefined,
    readonly traceparent?: string,
  ) {}

  /** The run id, under the name the DBOS side uses. */
  get workflowId(): string {
    return this.runId;
  }

  /** Every event of the run from its first, live, until it completes, fails, is cancelled or rejected. */
  events(options: Omit<EventsOptions, "fromStart"> = {}): AsyncGenerator<RunEvent> {
    return this.client.events(this.runId, options);
  }

  /** The `completed` event; throws RunFailedError, RunCancelledError or RunRejectedError (as the Python client). */
  async result(options: WaitOptions = {}): Promise<Completed> {
    return this.client.follow(this.runId, options, (event) => (event.type === "completed" ? event : undefined));
  }

  /**
   * Like `queue_agent_workflow`'s handle: the run's result once it completed, or, while it waits for an
   * approval, `status: "interrupted"` with the pending tool calls. Throws as `result()` does.
   */
  async getResult(options: WaitOptions & { onEvent?: (event: RunEvent) => void } = {}): Promise<RunResult> {
    return this.client.follow(this.runId, options, (event, pending) => {
      options.onEvent?.(event);
      if (event.type === "completed") {
        return { workflowId: this.runId, status: "completed", output: event.output, interruptions: [], usage: event.usage };
      }
      // An interruption is current when no later event of the run is stored yet and this client
      // has not just decided its calls (the run's next events may not be stored yet).
      if (event.type === "interrupted" && pending === 0 && !this.client.decidedAll(this.runId, event.approvals)) {
        return { workflowId: this.runId, status: "interrupted", output: undefined, interruptions: event.approvals };
      }
      return undefined;
    });
  }

  /** The type of the run's latest event (`accepted`, `queued`, `started`, ..., `completed`), or undefined. */
  async getStatus(): Promise<RunEvent["type"] | undefined> {
    return (await this.client.lastEvent(this.runId))?.type;
  }

  approve(callId: string, options: ApproveOptions = {}): Promise<void> {
    return this.client.approve(this.runId, callId, options);
  }

  reject(callId: string, message?: string, options: RejectOptions = {}): Promise<void> {
    return this.client.reject(this.runId, callId, message, options);
  }

  cancel(options: ControlOptions = {}): Promise<void> {
    return this.client.cancel(this.runId, options);
  }
}

export class Client {
  readonly subjects: Subjects;
  readonly js: JetStreamClient;
  /** Tool calls approved or rejected through this client, by run id. */
  private readonly decided = new Map<string, Set<string>>();

  constructor(
    readonly nc: NatsConnection,
    prefix = "timestep",
  ) {
    this.subjects = new Subjects(prefix);
    this.js = jetstream(nc);
  }

  /**
   * Connect to NATS: `servers`, else NATS_URL, else the embedded server a `timestep up` started in
   * this TIMESTEP_HOME; with the auth and TLS settings given or in the NATS_* variables.
   */
  static async connect(options: ConnectOptions = {}): Promise<Client> {
    const settings = resolveSettings(options);
    return new Client(await openConnection(settings), settings.prefix);
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.drain().catch(() => this.nc.close());
  }

  // --- runs -------------------------------------------------------------------

  /**
   * Submit a run. It gets a fresh id unless `id` is given; submitting the same id again is the same run.
   * Throws ValidationError (naming the field) before sending anything, and RunRejectedError when the
   * governor refuses it.
   */
  async submit(agent: string, input: string | Record<string, unknown>[], options: SubmitOptions = {}): Promise<Run> {
    const { replyTimeoutSeconds = 10, traceparent, ...rest } = options;
    check.positive("replyTimeoutSeconds", replyTimeoutSeconds);
    const body = buildRunRequest({ agent, input, ...rest });
    const trace = traceContext(traceparent);
    const runId = body.id ?? randomUUID().replaceAll("-", "");
    body.id = runId;
    const answer = await this.sendUntilAnswered(encode(body), runId, replyTimeoutSeconds, trace);
    if (answer === undefined) return new Run(this, runId, undefined, trace);
    const event = decode<Accepted | Rejected>(answer);
    if (event.type === "rejected") {
      throw new RunRejectedError(runId, asGiven(submitError(event.error, (event as { field?: unknown }).field)));
    }
    return new Run(this, runId, event, trace);
  }

  /**
   * Send the request, and again with the same Nats-Msg-Id while no governor answers: a request lost with
   * a dropped connection is sent again, and one that arrived is dropped as a duplicate or finds its run.
   */
  private async sendUntilAnswered(
    data: Uint8Array,
    runId: string,
    replyTimeoutSeconds: number,
    traceparent: string,
  ): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + replyTimeoutSeconds * 1000;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      try {
        const timeout = Math.max(1, Math.min(left, RESEND_SECONDS * 1000));
        return (await this.nc.request(this.subjects.submit, data, { timeout, headers: jsonHeaders(runId, traceparent) })).data;
      } catch (error) {
        if (noAnswer(error)) continue;
        // Disconnected or reconnecting: wait a moment, send again. Anything else is the caller's to see.
        if (this.nc.isClosed() || !(error instanceof ConnectionError || error instanceof RequestError)) throw error;
        await sleep(Math.min(250, Math.max(0, deadline - Date.now())));
      }
    }
  }

  /** A handle on a run submitted earlier (by this or any other program). */
  run(runId: string): Run {
    return new Run(this, check.runId("runId", runId), undefined);
  }

  /**
   * A run's events from its first (or, without `runId`, every run's new events), live, replayed from the
   * `TIMESTEP_EVENTS` stream. A run's iteration ends after its last event (completed, failed, cancelled or rejected).
   */
  async *events(runId?: string, options: EventsOptions = {}): AsyncGenerator<RunEvent> {
    if (runId !== undefined) check.runId("runId", runId);
    const messages = await this.feed(runId, options.fromStart ?? runId !== undefined);
    const stop = () => void messages.close();
    options.signal?.addEventListener("abort", stop, { once: true });
    try {
      if (options.signal?.aborted) return;
      for await (const msg of messages) {
        const event = decode<RunEvent>(msg.data);
        yield event;
        if (runId !== undefined && TERMINAL_TYPES.has(event.type)) return;
      }
    } finally {
      options.signal?.removeEventListener("abort", stop);
      await messages.close();
    }
  }

  /**
   * A run's streamed model text, each piece the moment the model yields it (core NATS,
   * `<prefix>.runs.live.<runId>`, not stored), until the run ends. Only pieces yielded after the
   * subscription are seen: open it before submitting, with your own `id`, for all of them. A gap in
   * `offset` means a piece was missed (core NATS delivers at most once); the run's `delta` events
   * (`events()`) hold the whole text, stored.
   */
  async *live(runId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<LiveText> {
    check.runId("runId", runId);
    const sub = this.nc.subscribe(this.subjects.live(runId));
    await this.nc.flush(); // the subscription is in place before the first piece is asked for
    const stop = new AbortController();
    const abort = () => stop.abort();
    options.signal?.addEventListener("abort", abort, { once: true });
    const follower = (async () => {
      for await (const _ of this.events(runId, { signal: stop.signal })) {
        // until the run's last event
      }
      // Every piece was published before the run's last event: after a round trip, drain delivers
      // those still queued here and ends the iteration.
      await this.nc.flush();
      await sub.drain();
    })().catch(() => sub.unsubscribe());
    try {
      for await (const msg of sub) yield decode<LiveText>(msg.data);
    } finally {
      options.signal?.removeEventListener("abort", abort);
      stop.abort();
      if (!sub.isClosed()) sub.unsubscribe();
      await follower;
    }
  }

  /** An ordered consumer on the events stream: all of a run's events (or every run's), in order. */
  private async feed(runId: string | undefined, fromStart: boolean): Promise<ConsumerMessages> {
    const filter = runId === undefined ? this.subjects.allEvents : this.subjects.runEvents(runId);
    try {
      const consumer = await this.js.consumers.get(EVENTS_STREAM, {
        filter_subjects: [filter],
        deliver_policy: fromStart ? DeliverPolicy.All : DeliverPolicy.New,
      });
      return await consumer.consume();
    } catch (error) {
      throw new TimestepError(
        `cannot read the ${EVENTS_STREAM} stream (${(error as Error).message}); start the actors (\`timestep up\`), which create it`,
      );
    }
  }

  /**
   * Follow a run's events until `pick` returns a value or the run ends; `pick` sees each event and how
   * many of the run's events are stored after it. Throws on failed, cancelled and rejected runs.
   */
  async follow<T>(runId: string, options: WaitOptions, pick: (event: RunEvent, pending: number) => T | undefined): Promise<T> {
    if (options.timeoutSeconds !== undefined) check.positive("timeoutSeconds", options.timeoutSeconds);
    const messages = await this.feed(check.runId("runId", runId), true);
    let timedOut = false;
    const timer =
      options.timeoutSeconds === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            void messages.close();
          }, options.timeoutSeconds * 1000);
    try {
      for await (const msg of messages) {
        const event = decode<RunEvent>(msg.data);
        const picked = pick(event, msg.info.pending);
        if (picked !== undefined) return picked;
        if (event.type === "failed") throw new RunFailedError(runId, event.error);
        if (event.type === "cancelled") throw new RunCancelledError(runId);
        if (event.type === "rejected") throw new RunRejectedError(runId, event.error);
      }
      if (timedOut) throw new WaitTimeoutError(`run '${runId}': no result within ${options.timeoutSeconds} s; the run goes on`);
      throw new TimestepError(`the events of run '${runId}' ended early`);
    } finally {
      clearTimeout(timer);
      await messages.close();
    }
  }

  /** The run's latest stored event, or undefined when it has none. */
  async lastEvent(runId: string): Promise<RunEvent | undefined> {
    const consumer = await this.js.consumers.get(EVENTS_STREAM, {
      filter_subjects: [this.subjects.runEvents(check.runId("runId", runId))],
      deliver_policy: DeliverPolicy.Last,
    });
    const msg = await consumer.next({ expires: 1000 });
    await consumer.delete().catch(() => undefined);
    return msg ? decode<RunEvent>(msg.data) : undefined;
  }

  /** True when every one of these tool calls was approved or rejected through this client. */
  decidedAll(runId: string, approvals: Approval[]): boolean {
    const decided = this.decided.get(runId);
    return decided !== undefined && approvals.every((a) => decided.has(a.call_id));
  }

  /**
   * Approve a tool call the run waits on (`call_id` from its `interrupted` event, or `listApprovals`). Resolves once
   * an agent actor handed the approval to the run; throws RequestRefusedError when it refused (`error.type`:
   * UnknownRun, AlreadyFinished, NotWaiting, NotStarted, InvalidRequest). `arguments` (a JSON object as a string)
   * replaces the model's, checked against the tool's parameters first (a bad edit is refused naming the field, and the
   * call stays pending); `always` approves every call of the tool for the rest of the run.
   */
  async approve(runId: string, callId: string, options: ApproveOptions = {}): Promise<void> {
    const body: Record<string, unknown> = { call_id: check.key("callId", callId) };
    if (options.always !== undefined) body.always = check.boolean("always", options.always);
    if (options.arguments !== undefined) body.arguments = check.text("arguments", options.arguments, 0, 200_000);
    if (options.decidedBy !== undefined) body.decided_by = check.key("decidedBy", options.decidedBy);
    await this.control(runId, "approve", body, callId, options);
    this.remember(runId, callId);
  }

  /** Reject a tool call the run waits on; the model is told `message`. Answered as `approve`. */
  async reject(runId: string, callId: string, message?: string, options: RejectOptions = {}): Promise<void> {
    const body: Record<string, unknown> = { call_id: check.key("callId", callId) };
    if (message !== undefined) body.message = check.text("message", message, 0, 10_000);
    if (options.always !== undefined) body.always = check.boolean("always", options.always);
    if (options.decidedBy !== undefined) body.decided_by = check.key("decidedBy", options.decidedBy);
    await this.control(runId, "reject", body, callId, options);
    this.remember(runId, callId);
  }

  /**
   * Approvals across runs, newest first (`<prefix>.approvals.list`, answered by an agent actor): `status` "pending"
   * (the inbox, the default), "decided" (the audit trail: who decided what, when) or "all", filtered by run, agent,
   * tool, queue and age.
   */
  async listApprovals(filter: ApprovalFilter = {}): Promise<ApprovalRecord[]> {
    const body: Record<string, unknown> = {};
    if (filter.status !== undefined) {
      if (!["pending", "decided", "all"].includes(filter.status)) {
        throw new ValidationError("status", `${JSON.stringify(filter.status)} is not "pending", "decided" or "all"`);
      }
      body.status = filter.status;
    }
    if (filter.runId !== undefined) body.run_id = check.runId("runId", filter.runId);
    if (filter.agent !== undefined) body.agent = check.key("agent", filter.agent);
    if (filter.tool !== undefined) body.tool = check.key("tool", filter.tool);
    if (filter.queue !== undefined) body.queue = check.name("queue", filter.queue);
    if (filter.olderThanSeconds !== undefined) body.older_than_seconds = check.seconds("olderThanSeconds", filter.olderThanSeconds);
    if (filter.newerThanSeconds !== undefined) body.newer_than_seconds = check.seconds("newerThanSeconds", filter.newerThanSeconds);
    if (filter.limit !== undefined) body.limit = check.integer("limit", filter.limit, 1, 10_000);
    return (await this.admin(this.subjects.approvalsList, body)).approvals ?? [];
  }

  /** Cancel a queued or running run. Answered as `approve` (AlreadyFinished for a run that ended). */
  async cancel(runId: string, options: ControlOptions = {}): Promise<void> {
    await this.control(runId, "cancel", {}, "run", options);
  }

  private remember(runId: string, callId: string): void {
    const calls = this.decided.get(runId) ?? new Set<string>();
    this.decided.set(runId, calls.add(callId));
  }

  private async control(runId: string, action: ControlAction, body: unknown, key: string, options: ControlOptions): Promise<void> {
    check.runId("runId", runId);
    if (options.wait !== undefined) check.boolean("wait", options.wait);
    if (options.wait === false) {
      // Stored in the control stream, de-duplicated like the Python client's, so a retried call acts once.
      await this.js.publish(this.subjects.control(runId, action), encode(body), {
        msgID: `${runId}.${action}.${key}`,
        headers: jsonHeaders(),
      });
      return;
    }
    let reply: Reply;
    try {
      const answer = await this.nc.request(this.subjects.command(runId, action), encode(body), {
        timeout: CONTROL_TIMEOUT_SECONDS * 1000,
        headers: jsonHeaders(),
      });
      reply = decode<Reply>(answer.data);
    } catch (error) {
      if (noAnswer(error)) {
        throw new TimestepError(
          `no agent actor answered ${action} for run '${runId}' within ${CONTROL_TIMEOUT_SECONDS} s; start one ` +
            "(`timestep up`, with the agent role), or pass { wait: false } to have it stored until one runs",
        );
      }
      throw error;
    }
    if (!reply.ok) throw new RequestRefusedError(asGiven(reply.error ?? { type: "Error", message: "refused" }));
  }

  // --- schedules and queues ---------------------------------------------------------

  /** Create or replace a cron schedule (5 fields, or 6 with seconds first) of a run request. */
  async createSchedule(name: string, cron: string, request: RunRequestInput): Promise<Schedule> {
    const body = { name: check.name("name", name), cron: check.cron("cron", cron), request: buildRunRequest(request, "request.") };
    return (await this.admin(this.subjects.schedulesCreate, body)).schedule as Schedule;
  }

  /** Delete a schedule; false when there was none of that name. */
  async deleteSchedule(name: string): Promise<boolean> {
    return Boolean((await this.admin(this.subjects.schedulesDelete, { name: check.name("name", name) })).deleted);
  }

  async listSchedules(): Promise<Schedule[]> {
    return (await this.admin(this.subjects.schedulesList, {})).schedules ?? [];
  }

  /** Create or replace a queue's policy, for every process; returns its status. */
  async configureQueue(name: string, policy: QueuePolicy = {}): Promise<QueueStatus> {
    const body: Record<string, unknown> = { name: check.name("name", name) };
    if (policy.limit !== undefined) body.limit = check.count("limit", policy.limit);
    if (policy.periodSeconds !== undefined) body.period_seconds = check.seconds("periodSeconds", policy.periodSeconds);
    if (policy.concurrency !== undefined) body.concurrency = check.count("concurrency", policy.concurrency);
    if (policy.tokensPerPeriod !== undefined) body.tokens_per_period = check.count("tokensPerPeriod", policy.tokensPerPeriod);
    if (policy.maxTokensPerRun !== undefined) body.max_tokens_per_run = check.count("maxTokensPerRun", policy.maxTokensPerRun);
    if (policy.modelRetry !== undefined) body.model_retry = check.modelRetry("modelRetry", policy.modelRetry);
    return ((await this.admin(this.subjects.queuesConfigure, body)).queues ?? [])[0] as QueueStatus;
  }

  /** Delete a queue; false when there was none. Refused (RequestRefusedError, saying how many) while runs wait or run on it. */
  async deleteQueue(name: string): Promise<boolean> {
    return Boolean((await this.admin(this.subjects.queuesDelete, { name: check.name("name", name) })).deleted);
  }

  /** Depth, running, and admitted in the current window, of one queue or (without a name) every queue. */
  async queueStatus(name?: string): Promise<QueueStatus[]> {
    const body = name === undefined ? {} : { name: check.name("name", name) };
    return (await this.admin(this.subjects.queuesStatus, body)).queues ?? [];
  }

  /**
   * The newest runs first, as the database holds them (`runs.list`), filtered by status
   * (`queued`, `running`, `waiting`, `completed`, `failed`, `cancelled`), agent and queue.
   */
  async listRuns(filter: { status?: RunInfo["status"]; agent?: string; queue?: string; limit?: number } = {}): Promise<RunInfo[]> {
    const body: Record<string, unknown> = {};
    if (filter.status !== undefined) body.status = filter.status;
    if (filter.agent !== undefined) body.agent = check.key("agent", filter.agent);
    if (filter.queue !== undefined) body.queue = check.name("queue", filter.queue);
    if (filter.limit !== undefined) body.limit = check.integer("limit", filter.limit, 1, 1000);
    return (await this.admin(this.subjects.runsList, body)).runs ?? [];
  }

  /** One run (`runs.get`); RequestRefusedError with type UnknownRun when there is none. */
  async getRun(runId: string): Promise<RunInfo> {
    return (await this.admin(this.subjects.runsGet, { id: check.runId("runId", runId) })).run as RunInfo;
  }

  /** The run's recorded steps in order (`runs.steps`), values cut to 2,000 characters of JSON (`cut`); with `step`, that one whole. */
  async steps(runId: string, step?: number): Promise<RunStep[]> {
    const body: Record<string, unknown> = { id: check.runId("runId", runId) };
    if (step !== undefined) body.step = check.integer("step", step, 1, 2147483647);
    return (await this.admin(this.subjects.runsSteps, body)).steps ?? [];
  }

  /**
   * A new run that goes on from step `fromStep` of the finished run `runId` (`runs.fork`): the steps before it
   * come from the record (nothing before it runs again), and from it on an agent actor runs it with the agent as
   * deployed now. Returns the fork; its first event is `forked`.
   */
  async fork(runId: string, fromStep: number, forkId?: string): Promise<RunInfo> {
    const body: Record<string, unknown> = { id: check.runId("runId", runId), from_step: check.integer("fromStep", fromStep, 1, 2147483647) };
    if (forkId !== undefined) body.fork_id = check.runId("forkId", forkId);
    return (await this.admin(this.subjects.runsFork, body)).run as RunInfo;
  }

  private async admin(subject: string, body: unknown, timeoutSeconds = 10): Promise<Reply> {
    let reply: Reply;
    try {
      reply = decode<Reply>((await this.nc.request(subject, encode(body), { timeout: timeoutSeconds * 1000, headers: jsonHeaders() })).data);
    } catch (error) {
      if (noAnswer(error)) throw new TimestepError(`no answer on ${subject} within ${timeoutSeconds} s: is a governor or scheduler running?`);
      throw error;
    }
    if (!reply.ok) throw new RequestRefusedError(asGiven(reply.error ?? { type: "Error", message: "refused" }));
    return reply;
  }

  // --- the seed's names (timestep's TypeScript API), over the bus --------------------

  /**
   * Run `agent` (the name an agent actor hosts) and wait for its result, as `run_agent_workflow` does:
   * `status: "completed"` with the output, or `"interrupted"` with the tool calls that wait for approval.
   */
  async runAgentWorkflow(
    agent: string,
    inputItems: string | Record<string, unknown>[],
    options: {
      session?: string;
      sessionPolicy?: SubmitOptions["sessionPolicy"];
      stream?: boolean;
      workflowId?: string;
      timeoutSeconds?: number;
      maxTokens?: number;
      onEvent?: (event: RunEvent) => void;
      /** Give up waiting after this long (the run goes on). */
      waitTimeoutSeconds?: number;
    } = {},
  ): Promise<RunResult> {
    const run = await this.submit(agent, inputItems, {
      sessionId: options.session,
      sessionPolicy: options.sessionPolicy,
      stream: options.stream,
      id: options.workflowId,
      timeoutSeconds: options.timeoutSeconds,
      maxTokens: options.maxTokens,
    });
    return run.getResult({ onEvent: options.onEvent, timeoutSeconds: options.waitTimeoutSeconds });
  }

  /** Queue a run, as `queue_agent_workflow` does; returns its handle at once (`getResult()`, `getStatus()`, `cancel()`). */
  async queueAgentWorkflow(
    agent: string,
    inputItems: string | Record<string, unknown>[],
    options: {
      session?: string;
      sessionPolicy?: SubmitOptions["sessionPolicy"];
      stream?: boolean;
      queueName?: string;
      priority?: number;
      deduplicationId?: string;
      workflowId?: string;
      timeoutSeconds?: number;
      maxTokens?: number;
    } = {},
  ): Promise<Run> {
    return this.submit(agent, inputItems, {
      sessionId: options.session,
      sessionPolicy: options.sessionPolicy,
      stream: options.stream,
      queue: options.queueName ?? "default",
      priority: options.priority,
      deduplicationId: options.deduplicationId,
      id: options.workflowId,
      timeoutSeconds: options.timeoutSeconds,
      maxTokens: options.maxTokens,
    });
  }

  /**
   * A cron schedule of runs, as `create_scheduled_agent_workflow` does; returns its name (by default
   * derived from the schedule, so creating the same one twice keeps one schedule).
   */
  async createScheduledAgentWorkflow(
    crontab: string,
    agent: string,
    inputItems: string | Record<string, unknown>[],
    options: { session?: string; stream?: boolean; name?: string; queueName?: string; priority?: number } = {},
  ): Promise<string> {
    check.cron("crontab", crontab);
    const digest = createHash("sha256")
      .update(`${crontab}|${agent}|${JSON.stringify(inputItems)}|${options.session ?? ""}`)
      .digest("hex")
      .slice(0, 12);
    const name = options.name ?? `${String(agent).replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 60)}-${digest}`;
    await this.createSchedule(name, crontab, {
      agent,
      input: inputItems,
      sessionId: options.session,
      stream: options.stream,
      queue: options.queueName,
      priority: options.priority,
    });
    return name;
  }
}
