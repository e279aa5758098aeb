/* Types of Timestep's subject contract, written by `npm run generate` from
 * subjects/contract.schema.json. Do not edit: change the msgspec types in subjects/, run
 * `python -m subjects.schema`, then `npm run generate`. */

export type RunEvent =
  | Accepted
  | Rejected
  | Queued
  | Started
  | Delta
  | ToolCall
  | ToolOutput
  | Interrupted
  | ToolApproved
  | ToolRejected
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
  Approve: Approve;
  Cancel: Cancel;
  Cancelled: Cancelled;
  Completed: Completed;
  DeadLetter: DeadLetter;
  Delta: Delta;
  ErrorInfo: ErrorInfo;
  Failed: Failed;
  Interrupted: Interrupted;
  QueueConfigure: QueueConfigure;
  QueueStatus: QueueStatus;
  QueueStatusRequest: QueueStatusRequest;
  Queued: Queued;
  Reject: Reject;
  Rejected: Rejected;
  Reply: Reply;
  RunEvent: RunEvent;
  RunRequest: RunRequest;
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
 * A tool call waiting for a human decision.
 */
export interface Approval {
  call_id: string;
  tool: string;
  arguments: string;
}
/**
 * `<prefix>.runs.control.<run_id>.approve`
 */
export interface Approve {
  /**
   * 1-255 characters, no control characters
   */
  call_id: string;
  always?: boolean;
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
 * The run finished with `output` (the agent's final output, as JSON).
 */
export interface Completed {
  type: "completed";
  run_id: string;
  seq: number;
  time: string;
  output: unknown;
  usage: TokenUsage;
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
 * What went wrong: `type` is a stable class name, `message` says what and how to fix it.
 */
export interface ErrorInfo {
  type: string;
  message: string;
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
 * `<prefix>.runs.control.<run_id>.reject`
 */
export interface Reject {
  /**
   * 1-255 characters, no control characters
   */
  call_id: string;
  message?: string | null;
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
}
export interface Schedule {
  name: string;
  cron: string;
  request: RunRequest;
  created_at: number;
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
  session_policy?: ("enqueue" | "interrupt" | "reject") | null;
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
 * A tool finished; `output` is its result as text.
 */
export interface ToolOutput {
  type: "tool_output";
  run_id: string;
  seq: number;
  time: string;
  call_id: string;
  output: string;
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
