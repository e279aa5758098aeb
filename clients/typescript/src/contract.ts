/* Types of Timestep's subject contract, written by `npm run generate` from
 * subjects/contract.schema.json. Do not edit: change the msgspec types in subjects/, run
 * `python -m subjects.schema`, then `npm run generate`. */

export type RunEvent =
  | Accepted
  | Forked
  | Rejected
  | Queued
  | Started
  | Delta
  | ToolCall
  | ToolOutput
  | Interrupted
  | ToolApproved
  | ToolRejected
  | Retrying
  | AgentChanged
  | Completed
  | Failed
  | Cancelled;

/**
 * Every type of the contract by name: `Contract["RunRequest"]`.
 */
export interface Contract {
  Accepted: Accepted;
  AgentChanged: AgentChanged;
  Approval: Approval;
  ApprovalList: ApprovalList;
  ApprovalRecord: ApprovalRecord;
  Approve: Approve;
  Cancel: Cancel;
  Cancelled: Cancelled;
  Completed: Completed;
  DeadLetter: DeadLetter;
  Delta: Delta;
  ErrorInfo: ErrorInfo;
  Failed: Failed;
  Forked: Forked;
  Interrupted: Interrupted;
  LiveText: LiveText;
  ModelRetry: ModelRetry;
  QueueConfigure: QueueConfigure;
  QueueDelete: QueueDelete;
  QueueStatus: QueueStatus;
  QueueStatusRequest: QueueStatusRequest;
  Queued: Queued;
  Reject: Reject;
  Rejected: Rejected;
  Reply: Reply;
  Retrying: Retrying;
  RunEvent: RunEvent;
  RunFork: RunFork;
  RunGet: RunGet;
  RunInfo: RunInfo;
  RunRequest: RunRequest;
  RunStep: RunStep;
  RunSteps: RunSteps;
  RunsList: RunsList;
  Schedule: Schedule;
  ScheduleCreate: ScheduleCreate;
  ScheduleDelete: ScheduleDelete;
  ScheduleList: ScheduleList;
  Started: Started;
  TokenUsage: TokenUsage;
  ToolApproved: ToolApproved;
  ToolCall: ToolCall;
  ToolOutput: ToolOutput;
  ToolRejected: ToolRejected;
}
/**
 * The request was validated and durably handed over.
 */
export interface Accepted {
  type: "accepted";
  run_id: string;
  seq: number;
  time: string;
}
/**
 * The run goes on (recovered, or resumed after an approval) under another definition of its agent
 * than the one it started with: `changes` says what changed (a tool removed, other parameters, other
 * instructions, ...); `previous` and `current` are the definitions' digests.
 */
export interface AgentChanged {
  type: "agent_changed";
  run_id: string;
  seq: number;
  time: string;
  agent: string;
  changes: string[];
  previous: string;
  current: string;
}
/**
 * A tool call waiting for a human decision; `deadline` (seconds since the epoch), when set,
 * is when it is rejected by itself if still undecided.
 */
export interface Approval {
  call_id: string;
  tool: string;
  arguments: string;
  deadline?: number | null;
}
/**
 * `<prefix>.approvals.list` (request/reply): approvals across runs, newest first. The body
 * may be empty (every pending approval).
 */
export interface ApprovalList {
  status?: "all" | "decided" | "pending";
  run_id?: string | null;
  agent?: string | null;
  tool?: string | null;
  queue?: string | null;
  older_than_seconds?: number | null;
  newer_than_seconds?: number | null;
  limit?: number;
}
/**
 * One tool call that waited for (or waits for) a human decision, as the database keeps it.
 */
export interface ApprovalRecord {
  run_id: string;
  call_id: string;
  agent: string;
  tool: string;
  arguments: string;
  session_id: string | null;
  queue: string | null;
  metadata: {
    [k: string]: string | undefined;
  } | null;
  requested_at: number;
  deadline: number | null;
  status: "approved" | "cancelled" | "expired" | "pending" | "rejected";
  decided_at?: number | null;
  decided_by?: string | null;
  message?: string | null;
  always?: boolean;
  approved_arguments?: string | null;
}
/**
 * `<prefix>.runs.control.<run_id>.approve`: run the tool call `call_id`, with `arguments`
 * (a JSON object as a string, checked against the tool's parameters) instead of the model's
 * when given; `always`: approve every call of this tool for the rest of the run.
 */
export interface Approve {
  /**
   * 1-255 characters, no control characters
   */
  call_id: string;
  always?: boolean;
  arguments?: string | null;
  decided_by?: string | null;
  decided_at?: number | null;
}
/**
 * `<prefix>.runs.control.<run_id>.cancel`
 */
export interface Cancel {}
/**
 * The run was cancelled (by request or by its timeout).
 */
export interface Cancelled {
  type: "cancelled";
  run_id: string;
  seq: number;
  time: string;
}
/**
 * The run finished with `output` (the agent's final output, as JSON); `context`, for a run
 * given a JSON object as its context, is that context as the run left it.
 */
export interface Completed {
  type: "completed";
  run_id: string;
  seq: number;
  time: string;
  output: unknown;
  usage: TokenUsage;
  context?: {
    [k: string]: unknown | undefined;
  } | null;
}
/**
 * Model usage summed over a run.
 */
export interface TokenUsage {
  requests?: number;
  input_tokens?: number;
  output_tokens?: number;
  total_tokens?: number;
}
/**
 * `<prefix>.dead.<original subject>`: a message that could not be processed, and why.
 */
export interface DeadLetter {
  subject: string;
  reason: string;
  error: ErrorInfo;
  data: string;
  size: number;
  headers: {
    [k: string]: string | undefined;
  };
  time: number;
}
/**
 * What went wrong: `type` is a stable class name, `message` says what and how to fix it, and
 * `field`, when one field of the request is at fault, names it as the contract does
 * (`deduplication_id`, `request.agent`, `arguments.to`); the message then starts with it.
 */
export interface ErrorInfo {
  type: string;
  message: string;
  field?: string | null;
}
/**
 * A piece of streamed model text, in order.
 */
export interface Delta {
  type: "delta";
  run_id: string;
  seq: number;
  time: string;
  text: string;
}
/**
 * The run ended with an error.
 */
export interface Failed {
  type: "failed";
  run_id: string;
  seq: number;
  time: string;
  error: ErrorInfo;
}
/**
 * The run is a fork: it goes on from step `from_step` of run `from_run` (of agent `agent`), with
 * that run's input and its steps before `from_step` as recorded, and runs from there with the agent
 * as deployed now (an `agent_changed` event follows when that agent differs from the one the run
 * forked started with). A fork's first event, numbered 0: its numbers then go on from those of the
 * steps it took from the record.
 */
export interface Forked {
  type: "forked";
  run_id: string;
  seq: number;
  time: string;
  from_run: string;
  from_step: number;
  agent: string;
}
/**
 * The run stopped to wait for approval of these tool calls; its state is saved.
 */
export interface Interrupted {
  type: "interrupted";
  run_id: string;
  seq: number;
  time: string;
  approvals: Approval[];
}
/**
 * A piece of a run's streamed model text, published on `<prefix>.runs.live.<run_id>` (core NATS,
 * not stored) the moment the model yields it, before the run's `delta` events store the same text.
 *
 * `call` numbers the run's model calls (the durable step of the call: a retried attempt is a new
 * one); `offset` is the number of characters of that call's text before `text`, so a subscriber
 * that sees an offset it did not expect has missed a piece (core NATS delivers at most once) and
 * reads the stored `delta` events instead. A live piece of an attempt that then failed is void,
 * as its `delta` events are (the `retrying` event says so). `time` is when the model yielded it.
 */
export interface LiveText {
  run_id: string;
  call: number;
  offset: number;
  text: string;
  time: string;
}
/**
 * How a run's failed model calls (408, 409, 429, 5xx, no connection) are retried. A field left out
 * keeps the next level's: the run's, else its queue's, else its agent's, else TIMESTEP_MODEL_*.
 */
export interface ModelRetry {
  max_attempts?: number | null;
  max_wait_seconds?: number | null;
  backoff_seconds?: number | null;
  max_backoff_seconds?: number | null;
}
/**
 * `<prefix>.queues.configure` (request/reply): create or replace a queue's policy.
 */
export interface QueueConfigure {
  /**
   * 1-100 characters of [A-Za-z0-9_-]
   */
  name: string;
  limit?: number | null;
  period_seconds?: number | null;
  concurrency?: number | null;
  tokens_per_period?: number | null;
  max_tokens_per_run?: number | null;
  model_retry?: ModelRetry | null;
}
/**
 * `<prefix>.queues.delete` (request/reply): delete a queue; refused while runs wait or run on it.
 */
export interface QueueDelete {
  /**
   * 1-100 characters of [A-Za-z0-9_-]
   */
  name: string;
}
export interface QueueStatus {
  name: string;
  limit: number | null;
  period_seconds: number | null;
  concurrency: number | null;
  tokens_per_period: number | null;
  depth: number;
  running: number;
  admitted_in_window: number;
  tokens_in_window: number;
  max_tokens_per_run?: number | null;
  model_retry?: ModelRetry | null;
  paused_until?: string | null;
  paused_reason?: string | null;
}
/**
 * `<prefix>.queues.status` (request/reply); no name means every queue.
 */
export interface QueueStatusRequest {
  name?: string | null;
}
/**
 * The run waits in `queue` for its turn.
 */
export interface Queued {
  type: "queued";
  run_id: string;
  seq: number;
  time: string;
  queue: string;
}
/**
 * `<prefix>.runs.control.<run_id>.reject`: the tool does not run and the model is told
 * `message`; `always`: reject every call of this tool for the rest of the run.
 */
export interface Reject {
  /**
   * 1-255 characters, no control characters
   */
  call_id: string;
  message?: string | null;
  always?: boolean;
  decided_by?: string | null;
  decided_at?: number | null;
}
/**
 * The request was refused; nothing ran.
 */
export interface Rejected {
  type: "rejected";
  run_id: string;
  seq: number;
  time: string;
  error: ErrorInfo;
}
/**
 * The answer to every request/reply subject: `ok`, or `error`; plus what was asked for.
 */
export interface Reply {
  ok: boolean;
  error?: ErrorInfo | null;
  schedule?: Schedule | null;
  schedules?: Schedule[] | null;
  queues?: QueueStatus[] | null;
  deleted?: boolean | null;
  runs?: RunInfo[] | null;
  run?: RunInfo | null;
  approvals?: ApprovalRecord[] | null;
  steps?: RunStep[] | null;
}
/**
 * A cron schedule of runs. Every schedule is listed here, made on the bus or by the library.
 */
export interface Schedule {
  name: string;
  cron: string;
  request: RunRequest;
  created_at: number;
  origin?: "bus" | "library";
  last_fired_at?: number | null;
}
/**
 * `<prefix>.runs.submit`: start an agent run.
 */
export interface RunRequest {
  /**
   * 1-255 characters, no control characters
   */
  agent: string;
  input:
    | string
    | {
        [k: string]: unknown | undefined;
      }[];
  id?: string | null;
  session_id?: string | null;
  queue?: string | null;
  priority?: number | null;
  deduplication_id?: string | null;
  timeout_seconds?: number | null;
  stream?: boolean;
  metadata?: {
    [k: string]: string | undefined;
  } | null;
  max_tokens?: number | null;
  model_retry?: ModelRetry | null;
  approval_timeout_seconds?: number | null;
  session_policy?: ("enqueue" | "interrupt" | "reject") | null;
  context?: {
    [k: string]: unknown | undefined;
  } | null;
}
/**
 * A run as the database holds it.
 */
export interface RunInfo {
  id: string;
  agent: string;
  status: "cancelled" | "completed" | "failed" | "queued" | "running" | "waiting";
  created_at: number;
  updated_at: number;
  queue?: string | null;
  session_id?: string | null;
  duration_seconds?: number | null;
  usage?: TokenUsage | null;
  error?: ErrorInfo | null;
  forked_from?: string | null;
  input?: {
    [k: string]: unknown | undefined;
  };
}
/**
 * One recorded step of a run.
 */
export interface RunStep {
  number: number;
  kind: "approval" | "guardrail" | "handoff" | "mcp" | "model" | "run" | "session" | "sleep" | "tool";
  name: string;
  status: "completed" | "failed";
  started_at?: number | null;
  ended_at?: number | null;
  attempt?: number | null;
  value?: {
    [k: string]: unknown | undefined;
  };
  error?: ErrorInfo | null;
  cut?: boolean;
}
/**
 * A model call failed for a passing reason (rate limit, overload, no connection): the run waits
 * `delay_seconds`, durably, until `retry_at`, then makes attempt `attempt + 1`. Text deltas
 * streamed since the failed attempt began are void: the next attempt streams its own.
 */
export interface Retrying {
  type: "retrying";
  run_id: string;
  seq: number;
  time: string;
  attempt: number;
  delay_seconds: number;
  retry_at: string;
  error: ErrorInfo;
  status_code?: number | null;
}
/**
 * The run's workflow began executing.
 */
export interface Started {
  type: "started";
  run_id: string;
  seq: number;
  time: string;
}
/**
 * A tool is about to run (durably, as its own step).
 */
export interface ToolCall {
  type: "tool_call";
  run_id: string;
  seq: number;
  time: string;
  tool: string;
  call_id: string;
  arguments: string;
}
/**
 * A tool finished; `output` is its result as text, `arguments` what it really ran with
 * (an approver may have edited the model's).
 */
export interface ToolOutput {
  type: "tool_output";
  run_id: string;
  seq: number;
  time: string;
  call_id: string;
  output: string;
  arguments?: string | null;
}
/**
 * The waiting run took the approval of this tool call (`always`: of the tool, for the rest of the run).
 */
export interface ToolApproved {
  type: "tool_approved";
  run_id: string;
  seq: number;
  time: string;
  call_id: string;
  tool: string;
  always?: boolean;
  arguments?: string | null;
  decided_by?: string | null;
}
/**
 * The waiting run took the rejection of this tool call: the tool does not run, the model is told `message`.
 */
export interface ToolRejected {
  type: "tool_rejected";
  run_id: string;
  seq: number;
  time: string;
  call_id: string;
  tool: string;
  message?: string | null;
  always?: boolean;
  decided_by?: string | null;
  expired?: boolean;
}
/**
 * `<prefix>.runs.fork` (request/reply): a new run that goes on from step `from_step` of the finished
 * run `id`; the steps before it come from the record (nothing before it runs again), and from it on
 * the run runs with the agent as deployed now. The reply's `run` is the fork.
 */
export interface RunFork {
  /**
   * 1-128 characters of [A-Za-z0-9_-]: one subject token
   */
  id: string;
  /**
   * the step to go on from (`runs.steps` numbers them)
   */
  from_step: number;
  fork_id?: string | null;
}
/**
 * `<prefix>.runs.get` (request/reply): one run; its timeline is in its events.
 */
export interface RunGet {
  /**
   * 1-128 characters of [A-Za-z0-9_-]: one subject token
   */
  id: string;
}
/**
 * `<prefix>.runs.steps` (request/reply): a run's recorded steps, in order; with `step`, that one
 * step with its whole value (a listing cuts long values).
 */
export interface RunSteps {
  /**
   * 1-128 characters of [A-Za-z0-9_-]: one subject token
   */
  id: string;
  step?: number | null;
}
/**
 * `<prefix>.runs.list` (request/reply): the newest runs first, filtered; the body may be empty.
 */
export interface RunsList {
  status?: ("cancelled" | "completed" | "failed" | "queued" | "running" | "waiting") | null;
  agent?: string | null;
  queue?: string | null;
  /**
   * at most this many runs (1-1000)
   */
  limit?: number;
}
/**
 * `<prefix>.schedules.create` (request/reply): run `request` on `cron` (5 fields, or 6 with seconds first).
 */
export interface ScheduleCreate {
  /**
   * 1-100 characters of [A-Za-z0-9_-]
   */
  name: string;
  cron: string;
  request: RunRequest;
}
/**
 * `<prefix>.schedules.delete` (request/reply)
 */
export interface ScheduleDelete {
  /**
   * 1-100 characters of [A-Za-z0-9_-]
   */
  name: string;
}
/**
 * `<prefix>.schedules.list` (request/reply); the body may be empty.
 */
export interface ScheduleList {}
