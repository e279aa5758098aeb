/** The errors the runtime raises on purpose: each says what to change. */

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

/** Refuse an id that is not a run id, naming `field`. */
export function checkRunId(field: string, id: unknown): void {
  if (typeof id !== "string" || id.length < 1 || id.length > 200 || /[\u0000-\u001f\u007f]/.test(id)) {
    throw new ValidationError(field, `${JSON.stringify(id)} is not a run id`, "give 1-200 characters without control characters, or none");
  }
}

/** A run with session policy `reject` arrived while another run of its session was unfinished (running,
 * waiting for its turn or for approval). */
export class SessionBusyError extends Error {
  override name = "SessionBusyError";
  readonly field = "session_id";
  constructor(readonly sessionId: string, readonly runningRunId: string) {
    super(
      `session_id: session ${JSON.stringify(sessionId)} has an unfinished run, ${JSON.stringify(runningRunId)}; wait for it to end ` +
      "(or approve or reject what it waits on), or send with session policy 'enqueue' to run after it or 'interrupt' to cancel it",
    );
  }
}
