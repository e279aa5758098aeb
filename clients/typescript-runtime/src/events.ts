/** The events of runs started from the bus, and where they go. */

import { DBOS, Error as DBOSErrors } from "@dbos-inc/dbos-sdk";

import { ConfigurationError } from "./errors.js";


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
export class RunEvents {
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

export const busRuns = new Map<string, RunEvents>();

export function eventsOfThisRun(): RunEvents | undefined {
  const id = DBOS.workflowID;
  return id === undefined ? undefined : busRuns.get(id);
}

/** Whether `e` (or what it wraps: the SDK wraps a tool step's error) is DBOS stopping the workflow here:
 * cancelled, or owned by another execution now. */
export function stoppedByDBOS(e: unknown, depth = 0): boolean {
  if (e instanceof DBOSErrors.DBOSWorkflowCancelledError || e instanceof DBOSErrors.DBOSWorkflowConflictError) return true;
  if (!e || typeof e !== "object" || depth > 5) return false;
  const { cause, error } = e as { cause?: unknown; error?: unknown };
  return stoppedByDBOS(cause, depth + 1) || stoppedByDBOS(error, depth + 1);
}

export function asText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** Publish a streamed run's piece of text live (when the bus is connected). */
export async function publishLive(piece: { run_id: string; call: number; offset: number; text: string; time: string }): Promise<void> {
  await live?.(piece);
}
