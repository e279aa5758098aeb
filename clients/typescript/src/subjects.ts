/** Subject and stream names of the contract, as in subjects/names.py. */

export const EVENTS_STREAM = "TIMESTEP_EVENTS";
export const SUBMIT_STREAM = "TIMESTEP_SUBMIT";
export const CONTROL_STREAM = "TIMESTEP_CONTROL";
export const DEAD_STREAM = "TIMESTEP_DEAD";

export type ControlAction = "approve" | "reject" | "cancel";

/**
 * Every subject of the contract under one prefix (`timestep` by default, TIMESTEP_SUBJECT_PREFIX).
 *
 * @example new Subjects().events("run-1", "completed") // "timestep.runs.events.run-1.completed"
 */
export class Subjects {
  constructor(readonly prefix: string = "timestep") {}

  get submit(): string {
    return `${this.prefix}.runs.submit`;
  }

  events(runId = "*", type = "*"): string {
    return `${this.prefix}.runs.events.${runId}.${type}`;
  }

  /** All events of one run (a subscription filter). */
  runEvents(runId: string): string {
    return `${this.prefix}.runs.events.${runId}.>`;
  }

  get allEvents(): string {
    return `${this.prefix}.runs.events.>`;
  }

  /** Core NATS, not stored: a run's streamed model text the moment the model yields it (`LiveText`). */
  live(runId = "*"): string {
    return `${this.prefix}.runs.live.${runId}`;
  }

  /** Stored in the control stream and acted on when an agent actor takes it; nothing answers. */
  control(runId: string, action: ControlAction): string {
    return `${this.prefix}.runs.control.${runId}.${action}`;
  }

  /** The same as a request: an agent actor acts on it at once and answers with a `Reply`. */
  command(runId: string, action: ControlAction): string {
    return `${this.prefix}.runs.command.${runId}.${action}`;
  }

  get schedulesCreate(): string {
    return `${this.prefix}.schedules.create`;
  }

  get schedulesDelete(): string {
    return `${this.prefix}.schedules.delete`;
  }

  get schedulesList(): string {
    return `${this.prefix}.schedules.list`;
  }

  get runsList(): string {
    return `${this.prefix}.runs.list`;
  }

  get runsGet(): string {
    return `${this.prefix}.runs.get`;
  }

  get runsSteps(): string {
    return `${this.prefix}.runs.steps`;
  }

  /** Request/reply: a new run going on from a step of a finished run (`RunFork`). */
  get runsFork(): string {
    return `${this.prefix}.runs.fork`;
  }

  get queuesConfigure(): string {
    return `${this.prefix}.queues.configure`;
  }

  get queuesDelete(): string {
    return `${this.prefix}.queues.delete`;
  }

  get queuesStatus(): string {
    return `${this.prefix}.queues.status`;
  }

  /** Request/reply: approvals across runs (pending ones, or the decided ones: the audit trail). */
  get approvalsList(): string {
    return `${this.prefix}.approvals.list`;
  }

  /** Where a message that could not be processed is copied, with its reason. */
  dead(original: string): string {
    return `${this.prefix}.dead.${original}`;
  }
}
