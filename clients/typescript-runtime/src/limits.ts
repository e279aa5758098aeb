/** What bounds one run beyond its turns: its model-token budget and how its failed model calls are retried. */

import { DBOS } from "@dbos-inc/dbos-sdk";

import { ValidationError } from "./errors.js";
import { retryPolicy, type RetryPolicy } from "./modelRetry.js";

/** How a run's failed model calls are retried; a field left out keeps TIMESTEP_MODEL_*'s (the contract's
 * `ModelRetry`, in this package's names). */
export type ModelRetry = Partial<RetryPolicy>;

/** A run used more model tokens than its budget: it stopped after the model call that crossed it, and no
 * later call ran. */
export class BudgetExceeded extends Error {
  override name = "BudgetExceeded";
  constructor(readonly used: number, readonly maxTokens: number) {
    super(
      `the run used ${used} model tokens, over its budget of max_tokens=${maxTokens}; ` +
      "it stopped after the model call that crossed it (raise max_tokens, or pass none, to let such runs finish)",
    );
  }
}

interface Limits {
  maxTokens?: number;
  retry?: ModelRetry;
  used: number;
}

const runs = new Map<string, Limits>();

export function setLimits(runId: string, maxTokens?: number, retry?: ModelRetry): void {
  runs.set(runId, { used: 0, ...(maxTokens === undefined ? {} : { maxTokens }), ...(retry === undefined ? {} : { retry }) });
}

export function clearLimits(runId: string): void {
  runs.delete(runId);
}

function ofThisRun(): Limits | undefined {
  const id = DBOS.workflowID;
  return id === undefined ? undefined : runs.get(id);
}

/** The retry settings of the run in progress: its own over TIMESTEP_MODEL_*'s. */
export function runRetryPolicy(): RetryPolicy {
  return { ...retryPolicy(), ...(ofThisRun()?.retry ?? {}) };
}

/** Count a model call's tokens against the run's budget (from the call's record, so a replay counts the same);
 * throws BudgetExceeded once they are over it. */
export function spend(tokens: number): void {
  const limits = ofThisRun();
  if (!limits) return;
  limits.used += tokens;
  if (limits.maxTokens !== undefined && limits.used > limits.maxTokens) throw new BudgetExceeded(limits.used, limits.maxTokens);
}

const RETRY_FIELDS: Record<keyof RetryPolicy, [snake: string, integer: boolean]> = {
  maxAttempts: ["max_attempts", true], maxWaitSeconds: ["max_wait_seconds", false],
  baseSeconds: ["backoff_seconds", false], maxBackoffSeconds: ["max_backoff_seconds", false],
};

/** A `ModelRetry` checked, naming `field` and the setting at fault. `snake`: given in the contract's names (a bus run's). */
export function checkModelRetry(field: string, value: unknown, snake = false): ModelRetry | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) throw new ValidationError(field, `${JSON.stringify(value)} is not a set of retry settings`, "give e.g. { maxAttempts: 3 }");
  const given = { ...(value as Record<string, unknown>) };
  const retry: ModelRetry = {};
  for (const [name, [contract, integer]] of Object.entries(RETRY_FIELDS) as [keyof RetryPolicy, [string, boolean]][]) {
    const key = snake ? contract : name;
    const v = given[key];
    delete given[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v < (integer ? 1 : 0) || (integer && !Number.isInteger(v))) {
      throw new ValidationError(`${field}.${key}`, `${JSON.stringify(v)} is not ${integer ? "a whole number from 1" : "a number of seconds from 0"}`, "give e.g. 3");
    }
    retry[name] = v;
  }
  const stray = Object.keys(given)[0];
  if (stray !== undefined) {
    const known = Object.entries(RETRY_FIELDS).map(([n, [c]]) => (snake ? c : n)).join(", ");
    throw new ValidationError(`${field}.${stray}`, "is not a retry setting", `use ${known}`);
  }
  return retry;
}

/** A token budget checked, naming `field`. */
export function checkMaxTokens(field: string, value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new ValidationError(field, `${JSON.stringify(value)} is not a number of tokens`, "give a whole number from 1, or none");
  }
  return value;
}
