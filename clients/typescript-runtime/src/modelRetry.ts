/**
 * Which failed model calls are worth another attempt, and how long to wait before it, as on the Python side
 * (timestep/durable/model_retry.py): 408, 409, 429, every 5xx and a lost connection are retried, waiting what
 * the provider asks (`retry-after-ms`, `retry-after`) or a doubling backoff, within the settings'
 * bounds. A failure is decided inside its attempt's step and recorded as a value, so a replay makes the same
 * attempts and waits the same.
 */

import { ValidationError } from "./errors.js";

/** TIMESTEP_MODEL_MAX_ATTEMPTS, TIMESTEP_MODEL_RETRY_SECONDS, TIMESTEP_MODEL_BACKOFF_SECONDS, TIMESTEP_MODEL_MAX_BACKOFF_SECONDS. */
export interface RetryPolicy {
  maxAttempts: number;
  maxWaitSeconds: number;
  baseSeconds: number;
  maxBackoffSeconds: number;
}

function setting(name: string, fallback: number, integer: boolean): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < (integer ? 1 : 0) || (integer && !Number.isInteger(value))) {
    throw new ValidationError(name, `${JSON.stringify(raw)} is not ${integer ? "a whole number from 1" : "a number of seconds from 0"}`, `set e.g. ${name}=${fallback}`);
  }
  return value;
}

/** The settings in force (read each time: a process's environment is the operator's). */
export function retryPolicy(): RetryPolicy {
  return {
    maxAttempts: setting("TIMESTEP_MODEL_MAX_ATTEMPTS", 10, true),
    maxWaitSeconds: setting("TIMESTEP_MODEL_RETRY_SECONDS", 600, false),
    baseSeconds: setting("TIMESTEP_MODEL_BACKOFF_SECONDS", 1, false),
    maxBackoffSeconds: setting("TIMESTEP_MODEL_MAX_BACKOFF_SECONDS", 60, false),
  };
}

/** One failed attempt, as recorded. */
export interface Failure {
  failed: true;
  /** The provider's error class (`RateLimitError`, `InternalServerError`, `APIConnectionError`, ...). */
  providerError: string;
  status: number | null;
  message: string;
  retryable: boolean;
  /** Seconds the provider asked for, if it did. */
  retryAfter: number | null;
  /** In [0, 1), drawn when the attempt failed. */
  jitter: number;
  /** The wait before the next attempt, decided in the step; null: no retry. */
  delay: number | null;
  headers: Record<string, string>;
}

const PASSING = new Set([408, 409, 429]);
const KEPT = ["retry-after", "retry-after-ms", "x-should-retry", "x-request-id"];

function header(headers: unknown, name: string): string | undefined {
  if (!headers) return undefined;
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined;
  const value = (headers as Record<string, unknown>)[name];
  return typeof value === "string" ? value : undefined;
}

function retryAfter(headers: unknown): number | null {
  const ms = header(headers, "retry-after-ms");
  if (ms && Number.isFinite(Number(ms))) return Math.max(Number(ms) / 1000, 0);
  const raw = header(headers, "retry-after");
  if (!raw) return null;
  if (Number.isFinite(Number(raw))) return Math.max(Number(raw), 0);
  const when = Date.parse(raw);
  return Number.isNaN(when) ? null : Math.max((when - Date.now()) / 1000, 0);
}

/** The record of a provider error (the `openai` client's `APIError` and its kin), or null for anything else. */
export function failureOf(e: unknown): Failure | null {
  if (!(e instanceof Error)) return null;
  const { status, headers } = e as { status?: unknown; headers?: unknown };
  if (typeof status === "number") {
    let retryable = PASSING.has(status) || status >= 500;
    const should = header(headers, "x-should-retry")?.trim().toLowerCase();
    if (should === "true" || should === "false") retryable = should === "true";
    const kept = Object.fromEntries(KEPT.flatMap((k) => (header(headers, k) === undefined ? [] : [[k, header(headers, k)!]])));
    return { failed: true, providerError: e.constructor.name, status, message: e.message, retryable, retryAfter: retryAfter(headers), jitter: Math.random(), delay: null, headers: kept };
  }
  if (e.constructor.name === "APIConnectionError" || e.constructor.name === "APIConnectionTimeoutError") {
    return { failed: true, providerError: e.constructor.name, status: null, message: e.message, retryable: true, retryAfter: null, jitter: Math.random(), delay: null, headers: {} };
  }
  return null;
}

/** Seconds to wait before attempt `attempt + 1`, or null to give up; `waited`: the waits so far. */
export function nextWait(failed: Failure, attempt: number, waited: number, policy: RetryPolicy): number | null {
  if (!failed.retryable || attempt >= policy.maxAttempts) return null;
  let delay: number;
  if (failed.retryAfter !== null) {
    delay = failed.retryAfter;  // the provider knows best; the total bound still applies
  } else {
    delay = Math.min(policy.baseSeconds * 2 ** (attempt - 1), policy.maxBackoffSeconds) * (1 - 0.25 * failed.jitter);
  }
  return waited + delay > policy.maxWaitSeconds ? null : delay;
}

/** The error a run's failed model call raises: named as the provider's class, with its status and retry headers. */
export class ModelCallError extends Error {
  constructor(readonly providerError: string, readonly status: number | null, message: string, readonly attempts: number, readonly headers: Record<string, string>) {
    super(`${message} (after ${attempts} attempt${attempts === 1 ? "" : "s"})`);
    this.name = providerError;
  }
}
