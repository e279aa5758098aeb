/** One error hierarchy, as in the Python client. Every message names the field at fault and the fix. */

import type { ErrorInfo } from "./contract.js";

/** Base class of every error the client throws on purpose. */
export class TimestepError extends Error {
  override name = "TimestepError";
}

/**
 * Bad input, found before anything was sent. The message starts with the field:
 * `id: 'a.b' contains '.'; use only letters, digits, '_' and '-' (at most 128 characters)`.
 */
export class ValidationError extends TimestepError {
  override name = "ValidationError";

  constructor(
    readonly field: string,
    readonly problem: string,
    readonly fix = "",
  ) {
    super(fix ? `${field}: ${problem}; ${fix}` : `${field}: ${problem}`);
  }
}

/** The governor refused the request; nothing ran. `error.message` names the field. */
export class RunRejectedError extends TimestepError {
  override name = "RunRejectedError";

  constructor(
    readonly runId: string,
    readonly error: ErrorInfo,
  ) {
    super(error.message);
  }
}

/** The run ended with an error. */
export class RunFailedError extends TimestepError {
  override name = "RunFailedError";

  constructor(
    readonly runId: string,
    readonly error: ErrorInfo,
  ) {
    super(`run '${runId}' failed: ${error.type}: ${error.message}`);
  }
}

/** The run was cancelled (by request or by its `timeoutSeconds`). */
export class RunCancelledError extends TimestepError {
  override name = "RunCancelledError";

  constructor(readonly runId: string) {
    super(`run '${runId}' was cancelled`);
  }
}

/** Waiting gave up: the run goes on; wait again or follow its events. */
export class WaitTimeoutError extends TimestepError {
  override name = "WaitTimeoutError";
}

/**
 * A request was refused and nothing was done: an admin request (schedules, queues), or approve, reject or cancel
 * (`error.type`: UnknownRun, AlreadyFinished, NotWaiting, NotStarted, InvalidRequest). `error.message` names the
 * field as the caller named it.
 */
export class RequestRefusedError extends TimestepError {
  override name = "RequestRefusedError";

  constructor(readonly error: ErrorInfo) {
    super(error.message);
  }
}
