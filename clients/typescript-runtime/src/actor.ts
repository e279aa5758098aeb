/**
 * The TypeScript agent actor: hosts this process's registered agents on the bus under the same contract as
 * the Python agent actor. It announces its agents in the hosted-agents bucket (renewed while it lives, with
 * `"runtime": "typescript"`, so a governor hands their direct runs to `<prefix>.runs.start.typescript`),
 * takes those runs from its durable consumer, starts each as a DBOS workflow (the durable hand-off, then the
 * ack) and publishes each run's events on `<prefix>.runs.events.<run_id>.<type>`, each stored before the
 * step that made it is recorded.
 */

import { DBOS } from "@dbos-inc/dbos-sdk";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";

import { registeredAgents } from "./agents.js";
import { approveToolCall, rejectToolCall } from "./approvals.js";
import { WORKFLOW, ensureDBOSLaunched, shutdownDBOS } from "./config.js";
import { ConfigurationError, NotWaitingError, ValidationError } from "./errors.js";
import { setEventSink, type RunEvent } from "./events.js";
import { checkMaxTokens, checkModelRetry } from "./limits.js";
import { database } from "./store.js";
import { SESSION_POLICIES, type SessionPolicy } from "./turns.js";
import { WAITING_EVENT, startBusRun, type Approval } from "./workflow.js";

const WORK_STREAM = "TIMESTEP_WORK";
const RUNTIME_HEADER = "Timestep-Runtime";
const AGENTS_BUCKET = "TIMESTEP_AGENTS";
const DURABLE = "agent-typescript";
/** As the Python side: an announcement lasts 15 s unless renewed, and is renewed every 5 s. */
const HOSTED_TTL_MS = 15_000;
const RENEW_MS = 5_000;

export interface ServeOptions {
  /** NATS servers (default: NATS_URL, else nats://127.0.0.1:4222). */
  natsUrl?: string;
  /** The subjects' prefix (default: TIMESTEP_SUBJECT_PREFIX, else `timestep`). */
  prefix?: string;
}

export interface AgentActor {
  /** The agents announced. */
  readonly agents: string[];
  /** Stop taking runs and announcing, and shut DBOS down: the runs under way resume in the next process
   * of this executor id (what a deploy's SIGTERM should call). */
  stop(): Promise<void>;
}

const hex = (text: string) => Buffer.from(text, "utf8").toString("hex");

/** The key of one agent hosted by one process, as the Python side writes it. */
function hostKey(agent: string, executorId: string): string {
  return `a-${hex(agent)}.e-${hex(executorId)}`;
}

interface StartRun {
  run_id: string;
  timeout_seconds: number | null;
  spec: {
    agent: string; input?: unknown; state?: unknown; session_id?: string | null; session_policy?: string | null; stream?: boolean;
    max_turns?: number; seq_base?: number; context?: unknown; approval_timeout_seconds?: number | null;
    max_tokens?: number | null; model_retry?: unknown; queue?: string | null;
  };
}

/** Serve the agents registered in this process (`registerAgent`) on the bus, until `stop()`. */
export async function serveAgents(options: ServeOptions = {}): Promise<AgentActor> {
  const agents = registeredAgents();
  if (!agents.length) throw new ValidationError("agents", "no agent is registered in this process", "call registerAgent(agent) for each agent before serveAgents()");
  const prefix = options.prefix ?? process.env.TIMESTEP_SUBJECT_PREFIX ?? "timestep";
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(prefix)) {
    throw new ValidationError("prefix", `${JSON.stringify(prefix)} is not a subject prefix`, "use tokens of A-Z, a-z, 0-9, '_' and '-' joined by dots");
  }
  const servers = (options.natsUrl ?? process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean);
  const executorId = process.env.TIMESTEP_EXECUTOR_ID || "local";
  let nc: NatsConnection;
  try {
    nc = await connect({ servers, name: `timestep-ts-agent-${executorId}`, maxReconnectAttempts: -1, timeout: 10_000 });
  } catch (e) {
    throw new ConfigurationError(`could not connect to NATS at ${servers.join(",")} (${(e as Error).message}); check NATS_URL`);
  }
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const start = `${prefix}.runs.start.typescript`;

  /** Stored once JetStream acks it; de-duplicated by `<run_id>.<seq>` as on the Python side. */
  const publishEvent = async (event: RunEvent) => {
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set(RUNTIME_HEADER, "typescript");  // control for the run comes on to these actors (see `commands` below)
    await js.publish(`${prefix}.runs.events.${event.run_id}.${event.type}`, JSON.stringify(event), {
      msgID: event.type === "cancelled" ? `${event.run_id}.cancelled.${event.seq}` : `${event.run_id}.${event.seq}`, headers: h,
    });
  };
  setEventSink(publishEvent, async (piece) => {
    nc.publish(`${prefix}.runs.live.${piece.run_id}`, JSON.stringify(piece));  // core NATS: not stored, not waited for
  });

  // Launched once events have somewhere to go: the bus runs a crash left unfinished resume at launch.
  await ensureDBOSLaunched();

  // The work stream is the governor's (`timestep up` makes it); an older one gains this subject.
  let info;
  try {
    info = await jsm.streams.info(WORK_STREAM);
  } catch {
    throw new ConfigurationError(`JetStream has no stream ${WORK_STREAM}: start the governor first (timestep up), with the same NATS_URL and prefix`);
  }
  if (!info.config.subjects.includes(start)) {
    await jsm.streams.update(WORK_STREAM, { subjects: [...info.config.subjects, start] });
  }
  await jsm.consumers.add(WORK_STREAM, { durable_name: DURABLE, filter_subject: start, ack_policy: AckPolicy.Explicit, ack_wait: 30_000_000_000, max_deliver: 10 });

  const kvm = new Kvm(nc);
  let kv: KV;
  try {
    kv = await kvm.open(AGENTS_BUCKET);
    await kv.status();
  } catch {
    kv = await kvm.create(AGENTS_BUCKET, { history: 1, ttl: HOSTED_TTL_MS });
  }
  const announce = async () => {
    const entry = JSON.stringify({ executor_id: executorId, time: Date.now() / 1000, runtime: "typescript" });
    for (const agent of agents) await kv.put(hostKey(agent, executorId), entry);
  };
  await announce();
  const renewing = setInterval(() => announce().catch((e) => console.warn(`could not renew the hosted agents: ${(e as Error).message}`)), RENEW_MS);

  // Control for the runs executed here: a Python agent actor validates each message and passes it on
  // (request/reply), taking the answer as its own.
  const commands = nc.subscribe(`${prefix}.runs.command.typescript.*.*`, {
    queue: "timestep-agent-typescript",
    callback: (err, msg) => {
      if (err) return;
      const [runId, action] = msg.subject.split(".").slice(-2) as [string, string];
      control(runId, action, msg.data.length ? msg.json<ControlBody>() : {}).then(
        (reply) => msg.respond(JSON.stringify(reply)),
        (e) => msg.respond(JSON.stringify({ ok: false, error: { type: "Unavailable", message: `${(e as Error).name}: ${(e as Error).message}; try again` } })),
      );
    },
  });

  // The approvals the runs executed here wait on, for the approvals inbox (`<prefix>.approvals.list`), which a
  // Python agent actor answers with its own and these.
  const inbox = nc.subscribe(`${prefix}.approvals.list.typescript`, {
    queue: "timestep-agent-typescript",
    callback: (err, msg) => {
      if (err) return;
      approvalRecords(msg.data.length ? msg.json<ApprovalQuery>() : {}).then(
        (approvals) => msg.respond(JSON.stringify({ ok: true, approvals })),
        (e) => msg.respond(JSON.stringify({ ok: false, error: { type: "Unavailable", message: `${(e as Error).name}: ${(e as Error).message}; try again` } })),
      );
    },
  });

  const consumer = await js.consumers.get(WORK_STREAM, DURABLE);
  const messages = await consumer.consume({ max_messages: 16 });
  const handled = (async () => {
    for await (const msg of messages) await handle(msg);
  })();

  async function handle(msg: JsMsg): Promise<void> {
    let run: StartRun;
    try {
      run = msg.json<StartRun>();
    } catch (e) {
      console.warn(`a start on ${msg.subject} that is not JSON was dropped: ${(e as Error).message}`);
      msg.term();
      return;
    }
    const { spec } = run;
    try {
      if (spec.state != null) throw new ValidationError("state", "is not built for TypeScript agent actors yet", "submit the run without it");
      if (typeof spec.input !== "string" && !Array.isArray(spec.input)) {
        throw new ValidationError("input", "is neither text nor a list of input items", "submit the user's text as input");
      }
      const policy = spec.session_policy ?? undefined;
      if (policy !== undefined && !SESSION_POLICIES.includes(policy as SessionPolicy)) {
        throw new ValidationError("session_policy", `${JSON.stringify(policy)} is not a session policy`, "use enqueue, reject or interrupt");
      }
      const maxTokens = checkMaxTokens("max_tokens", spec.max_tokens);
      const modelRetry = checkModelRetry("model_retry", spec.model_retry, true);
      await startBusRun(run.run_id, {
        agent: spec.agent, input: spec.input as string, maxTurns: spec.max_turns ?? 10, seqBase: spec.seq_base ?? 0,
        timeoutSeconds: run.timeout_seconds, context: spec.context, approvalTimeoutSeconds: spec.approval_timeout_seconds,
        stream: spec.stream ?? false, sessionId: spec.session_id ?? null, sessionPolicy: (policy as SessionPolicy | undefined) ?? null,
        maxTokens, modelRetry, queue: spec.queue ?? null,
      });
      msg.ack();
    } catch (e) {
      if (e instanceof ValidationError) {
        // The run ends here, saying why, instead of leaving its followers waiting.
        await publishEvent({
          type: "failed", run_id: run.run_id, seq: (spec.seq_base ?? 0) + 1, time: new Date().toISOString(),
          error: { type: "InvalidRequest", message: e.message, field: e.field },
        });
        msg.ack();
        return;
      }
      console.warn(`run ${run.run_id} could not be started (${(e as Error).message}); it is offered again`);
      msg.nak(1000);
    }
  }

  return {
    agents,
    async stop() {
      clearInterval(renewing);
      commands.unsubscribe();
      inbox.unsubscribe();
      await messages.close();
      await handled.catch(() => undefined);
      await shutdownDBOS();
      setEventSink(undefined);
      await nc.drain();
    },
  };
}

type Reply = { ok: true } | { ok: false; error: { type: string; message: string; field?: string } };

/** An approve or reject as the Python agent actor passes it on (validated, `decided_by` set). */
interface ControlBody {
  call_id?: string;
  arguments?: string | null;
  always?: boolean;
  message?: string | null;
  decided_by?: string | null;
}

/** Carry out a control message for run `runId` (already validated by the Python agent actor). */
async function control(runId: string, action: string, body: ControlBody): Promise<Reply> {
  const status = await DBOS.getWorkflowStatus(runId);
  if (!status) return { ok: false, error: { type: "UnknownRun", message: `no run ${JSON.stringify(runId)}; check the id`, field: "run_id" } };
  if (!["PENDING", "ENQUEUED"].includes(status.status)) {
    return { ok: false, error: { type: "AlreadyFinished", message: `run ${JSON.stringify(runId)} already finished (${status.status.toLowerCase()}); there is nothing to ${action}` } };
  }
  if (action === "cancel") {
    await DBOS.cancelWorkflow(runId);  // the run stops at its next step and publishes `cancelled`
    return { ok: true };
  }
  const common = { ...(body.always ? { always: true } : {}), ...(body.decided_by ? { decidedBy: body.decided_by } : {}) };
  try {
    if (action === "approve") await approveToolCall(runId, body.call_id ?? "", { ...common, ...(body.arguments != null ? { arguments: body.arguments } : {}) });
    else await rejectToolCall(runId, body.call_id ?? "", { ...common, ...(body.message != null ? { message: body.message } : {}) });
  } catch (e) {
    if (e instanceof NotWaitingError) {
      const why = e.message.replace(/^callId: /, "").replace(/; check pendingApprovals\(workflowId\)$/, "");
      return { ok: false, error: { type: "NotWaiting", message: `${why}; the run's interrupted event lists the calls it waits on`, field: "call_id" } };
    }
    if (e instanceof ValidationError) return { ok: false, error: { type: "InvalidRequest", message: e.message.replace(/^[^:]+: /, ""), field: e.field === "callId" ? "call_id" : e.field } };
    throw e;
  }
  return { ok: true };
}

/** An `ApprovalList` (subjects/messages.py), as the Python agent actor passes it on. */
interface ApprovalQuery {
  status?: string;
  run_id?: string;
  agent?: string;
  tool?: string;
  queue?: string;
  older_than_seconds?: number;
  newer_than_seconds?: number;
  limit?: number;
}

/** The approvals of the runs of this application, as `ApprovalRecord`s, newest first: those waiting (from
 * the runs' own events) and those decided (the audit trail), as `query.status` asks. */
async function approvalRecords(query: ApprovalQuery): Promise<Record<string, unknown>[]> {
  const status = query.status ?? "pending";
  const records = [
    ...(status === "decided" ? [] : await pendingRecords(query)),
    ...(status === "pending" ? [] : await decidedRecords(query)),
  ];
  const now = Date.now() / 1000;
  return records
    .filter((r) => (!query.agent || r.agent === query.agent) && (!query.tool || r.tool === query.tool) && (!query.queue || r.queue === query.queue))
    .filter((r) => query.older_than_seconds === undefined || (r.requested_at as number) <= now - query.older_than_seconds)
    .filter((r) => query.newer_than_seconds === undefined || (r.requested_at as number) >= now - query.newer_than_seconds)
    .sort((a, b) => (b.requested_at as number) - (a.requested_at as number))
    .slice(0, query.limit ?? 100);
}

/** The audit trail: the decided calls as each run recorded them with its decision. */
async function decidedRecords(query: ApprovalQuery): Promise<Record<string, unknown>[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  for (const [column, value] of [["run_id", query.run_id], ["agent", query.agent], ["tool", query.tool], ["queue", query.queue]] as const) {
    if (value) where.push(`${column} = $${args.push(value)}`);
  }
  const now = Date.now() / 1000;
  if (query.older_than_seconds !== undefined) where.push(`requested_at <= $${args.push(now - query.older_than_seconds)}`);
  if (query.newer_than_seconds !== undefined) where.push(`requested_at >= $${args.push(now - query.newer_than_seconds)}`);
  const { rows } = await (await database()).query(
    `SELECT * FROM timestep.approvals ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY requested_at DESC LIMIT $${args.push(query.limit ?? 100)}`,
    args,
  );
  return rows.map((r) => ({ ...r, metadata: null }));
}

/** The calls the runs executing now wait on. */
async function pendingRecords(query: ApprovalQuery): Promise<Record<string, unknown>[]> {
  const runs = await DBOS.listWorkflows({ workflowName: WORKFLOW, status: "PENDING", loadInput: true, ...(query.run_id ? { workflowIDs: [query.run_id] } : {}) });
  const records: Record<string, unknown>[] = [];
  for (const run of runs) {
    const waiting = (await DBOS.getEvent<Approval[]>(run.workflowID, WAITING_EVENT, 0)) ?? [];
    const { agent = "", sessionId = null, queue = run.queueName ?? null } = (run.input?.[0] as { agent?: string; sessionId?: string; queue?: string } | undefined) ?? {};
    for (const a of waiting) {
      const requestedAt = a.requestedAt ?? run.createdAt / 1000;
      records.push({
        run_id: run.workflowID, call_id: a.callId, agent, tool: a.tool, arguments: a.arguments, session_id: sessionId,
        queue, metadata: null, requested_at: requestedAt, deadline: a.deadline ?? null, status: "pending",
      });
    }
  }
  return records;
}
