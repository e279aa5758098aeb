/** Queued runs: admitted by a DBOS queue's rate, concurrency and priority. */

import { DBOS, Error as DBOSErrors } from "@dbos-inc/dbos-sdk";
import type { Agent, AgentInputItem, RunState } from "@openai/agents";

import { DEFAULT_MAX_TURNS, ensureDBOSLaunched } from "./config.js";
import { DuplicateRunError, ValidationError, checkRunId } from "./errors.js";
import { RunHandle, agentRun, prepare, type RunOptions } from "./workflow.js";


/** The queue a run without `queueName` joins; as on the Python side, 50 runs a minute. */
export const DEFAULT_QUEUE = "default";
const DEFAULT_LIMIT = 50;
const DEFAULT_PERIOD_SECONDS = 60;
/** A run without a priority runs after every prioritised one (priorities are 1 to LOWEST_PRIORITY - 1). */
const LOWEST_PRIORITY = 2 ** 31 - 1;

/** How a queue admits runs: at most `limit` starts per `periodSeconds` (the provider's requests per period),
 * and at most `concurrency` runs at once (across processes) or `workerConcurrency` in one process. */
export interface QueuePolicy {
  limit?: number;
  periodSeconds?: number;
  concurrency?: number;
  workerConcurrency?: number;
}

function checkCount(field: string, value: unknown, fix: string): void {
  if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 1_000_000)) {
    throw new ValidationError(field, `${JSON.stringify(value)} is not a whole number from 1 to 1000000`, fix);
  }
}

function checkQueueName(field: string, name: unknown): void {
  if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    throw new ValidationError(field, `${JSON.stringify(name)} is not a queue name`, "use 1-64 characters of A-Z, a-z, 0-9, '_' and '-'");
  }
}

function queueParameters(policy: QueuePolicy) {
  const { limit, periodSeconds, concurrency, workerConcurrency, ...unknown } = policy ?? {};
  const stray = Object.keys(unknown);
  if (stray.length) throw new ValidationError(`policy.${stray[0]}`, "is not a queue setting", "use limit, periodSeconds, concurrency or workerConcurrency");
  checkCount("policy.limit", limit, "give the runs the queue may start per period, e.g. 50");
  if (periodSeconds !== undefined && !(typeof periodSeconds === "number" && periodSeconds > 0 && periodSeconds <= 86_400)) {
    throw new ValidationError("policy.periodSeconds", `${JSON.stringify(periodSeconds)} is not a number of seconds from 0 to 86400`, "give e.g. 60");
  }
  if ((limit === undefined) !== (periodSeconds === undefined)) {
    throw new ValidationError(limit === undefined ? "policy.limit" : "policy.periodSeconds", "is given without the other", "give limit and periodSeconds together (a rate: limit runs per periodSeconds)");
  }
  checkCount("policy.concurrency", concurrency, "give the most runs of the queue at once, or none");
  checkCount("policy.workerConcurrency", workerConcurrency, "give the most runs of the queue at once in one process, or none");
  return {
    ...(limit === undefined ? {} : { rateLimit: { limitPerPeriod: limit, periodSec: periodSeconds! } }),
    ...(concurrency === undefined ? {} : { globalConcurrency: concurrency }),
    ...(workerConcurrency === undefined ? {} : { workerConcurrency }),
  };
}

/** Set how queue `name` admits runs, for every process on the database (stored with the queue; a queue
 * named by a run before it was configured has 50 runs a minute). */
export async function configureQueue(name: string, policy: QueuePolicy): Promise<void> {
  checkQueueName("name", name);
  const params = queueParameters(policy);
  await ensureDBOSLaunched();
  await DBOS.registerQueue(name, { ...params, onConflict: "always_update" });
}

const known = new Set<string>();

/** The queue, made with the default policy the first time it is named (an operator's settings kept). */
async function ensureQueue(name: string): Promise<void> {
  if (known.has(name)) return;
  await DBOS.registerQueue(name, { rateLimit: { limitPerPeriod: DEFAULT_LIMIT, periodSec: DEFAULT_PERIOD_SECONDS }, onConflict: "never_update" });
  known.add(name);
}

/** What a queued run does beyond the guide's positional arguments. */
export interface QueueRunOptions extends RunOptions {
  /** A `deduplicationId` still queued or running: `error` (default) throws DuplicateRunError, `return`
   * gives that run's handle. */
  onDuplicate?: "error" | "return";
}

/**
 * Queue a durable run and return its handle at once; a process of this application on the database starts
 * it when its queue admits it (the default queue: 50 runs per 60 s; see `configureQueue`). A lower `priority`
 * (1 and up) runs first; a run without one runs after every prioritised run. A `deduplicationId` still queued
 * or running throws `DuplicateRunError`, or with `onDuplicate: "return"` gives the existing run's handle.
 */
export async function queueAgentWorkflow(
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[] | RunState<any, any>,
  session?: unknown,
  stream = false,
  queueName?: string,
  priority?: number,
  deduplicationId?: string,
  workflowId?: string,
  timeoutSeconds?: number,
  options: QueueRunOptions = {},
): Promise<RunHandle> {
  const queue = queueName ?? DEFAULT_QUEUE;
  checkQueueName("queueName", queue);
  if (priority !== undefined && !(Number.isInteger(priority) && priority >= 1 && priority <= LOWEST_PRIORITY - 1)) {
    throw new ValidationError("priority", `${JSON.stringify(priority)} is not a whole number from 1 to ${LOWEST_PRIORITY - 1}`, "give 1 for the most urgent, or none to run after prioritised runs");
  }
  if (deduplicationId !== undefined) checkRunId("deduplicationId", deduplicationId);
  const { onDuplicate = "error", ...runOptions } = options ?? {};
  if (onDuplicate !== "error" && onDuplicate !== "return") {
    throw new ValidationError("options.onDuplicate", `${JSON.stringify(onDuplicate)} is not "error" or "return"`, "choose what a duplicate deduplicationId does");
  }
  const { id, spec, timeoutMS } = await prepare(agent, inputItems, session, stream, timeoutSeconds, DEFAULT_MAX_TURNS, undefined, workflowId, runOptions);
  await ensureQueue(queue);
  try {
    await DBOS.startWorkflow(agentRun, {
      workflowID: id, queueName: queue, ...(timeoutMS ? { timeoutMS } : {}),
      enqueueOptions: { priority: priority ?? LOWEST_PRIORITY, ...(deduplicationId === undefined ? {} : { deduplicationID: deduplicationId }) },
    })({ ...spec, queue });
  } catch (e) {
    if (!(e instanceof DBOSErrors.DBOSQueueDuplicatedError)) throw e;
    const existing = (await DBOS.listWorkflows({ queueName: queue, status: ["ENQUEUED", "PENDING"] })).find((w) => w.deduplicationID === deduplicationId);
    if (onDuplicate === "return" && existing) return new RunHandle(existing.workflowID);
    throw new DuplicateRunError(
      `deduplicationId: a run with ${JSON.stringify(deduplicationId)} is still queued or running on ${JSON.stringify(queue)}` +
        `${existing ? ` (${existing.workflowID})` : ""}; wait for it, or pass onDuplicate: "return" for its handle`,
      existing?.workflowID ?? "", deduplicationId!,
    );
  }
  return new RunHandle(id);
}

