export { Client, Run, buildRunRequest, asGiven, TERMINAL_TYPES } from "./client.js";
export type {
  SubmitOptions,
  RunRequestInput,
  EventsOptions,
  WaitOptions,
  RunResult,
  QueuePolicy,
  ModelRetryOptions,
  ControlOptions,
  ApproveOptions,
  RejectOptions,
  ApprovalFilter,
} from "./client.js";
export { resolveSettings, resolveServers } from "./connect.js";
export type { ConnectOptions, TlsFiles } from "./connect.js";
export {
  TimestepError,
  ValidationError,
  RunRejectedError,
  RunFailedError,
  RunCancelledError,
  WaitTimeoutError,
  RequestRefusedError,
} from "./errors.js";
export { Subjects, EVENTS_STREAM, SUBMIT_STREAM, CONTROL_STREAM, DEAD_STREAM } from "./subjects.js";
export type { ControlAction } from "./subjects.js";
export { isValidRunId, runIdProblem, RUN_ID_PATTERN, RUN_ID_MAX_LENGTH } from "./validate.js";
export type * from "./contract.js";
