/** Checks of the client's input, before anything is sent: the same limits as the msgspec types in subjects/. */

import { ValidationError } from "./errors.js";

export const RUN_ID_MAX_LENGTH = 128;
export const RUN_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
const NAME_PATTERN = /^[A-Za-z0-9_-]{1,100}$/;
const PRIORITY_MAX = 2 ** 31 - 2;
const COUNT_MAX = 2 ** 31 - 1;
const SECONDS_MAX = 31_536_000;
const CONTROL = /[\x00-\x1f\x7f]/;

const show = (value: unknown): string => (typeof value === "string" ? `'${value}'` : String(value));
const kind = (value: unknown): string => (value === null ? "null" : Array.isArray(value) ? "array" : typeof value);

/** Why `value` cannot be a run id, or undefined when it can (as `run_id_problem` in subjects/ids.py). */
export function runIdProblem(value: unknown): string | undefined {
  if (typeof value !== "string") return `must be a string, not ${kind(value)}`;
  if (value === "") return "must not be empty";
  if (value.length > RUN_ID_MAX_LENGTH) return `is ${value.length} characters long; the limit is ${RUN_ID_MAX_LENGTH}`;
  const bad = [...value].find((c) => !/[A-Za-z0-9_-]/.test(c));
  if (bad !== undefined) {
    return `${show(value)} contains '${bad}'; use only letters, digits, '_' and '-' (at most ${RUN_ID_MAX_LENGTH} characters)`;
  }
  return undefined;
}

/** True when `value` can be a run id (and a DBOS workflow id and a subject token). */
export function isValidRunId(value: unknown): value is string {
  return runIdProblem(value) === undefined;
}

export function runId(field: string, value: unknown): string {
  const problem = runIdProblem(value);
  if (problem) throw new ValidationError(field, problem);
  return value as string;
}

export function name(field: string, value: unknown): string {
  if (typeof value !== "string" || !NAME_PATTERN.test(value)) {
    throw new ValidationError(field, `${show(value)} is not a name`, "use 1-100 letters, digits, '_' and '-'");
  }
  return value;
}

export function text(field: string, value: unknown, min: number, max: number): string {
  if (typeof value !== "string") throw new ValidationError(field, `must be a string, not ${kind(value)}`);
  if (value.length < min) throw new ValidationError(field, "must not be empty");
  if (value.length > max) throw new ValidationError(field, `is ${value.length} characters long; the limit is ${max}`);
  return value;
}

/** An agent name, session id, deduplication id or call id: 1-255 characters, no control characters (the database keeps them). */
export function key(field: string, value: unknown): string {
  text(field, value, 1, 255);
  const bad = CONTROL.exec(value as string);
  if (bad) {
    const code = bad[0].charCodeAt(0).toString(16).padStart(2, "0");
    throw new ValidationError(field, `contains the control character \\x${code}`, "remove it");
  }
  return value as string;
}

export function integer(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(field, `${show(value)} is not a whole number from ${min} to ${max}`);
  }
  return value;
}

/** A limit, a concurrency or a token budget: 1 to 2,147,483,647. */
export function count(field: string, value: unknown): number {
  return integer(field, value, 1, COUNT_MAX);
}

export function priority(field: string, value: unknown): number {
  return integer(field, value, 1, PRIORITY_MAX);
}

/** A duration on the wire: more than 0 and at most 365 days. */
export function seconds(field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > SECONDS_MAX) {
    throw new ValidationError(field, `${show(value)} is not a number of seconds greater than 0 and at most ${SECONDS_MAX} (365 days)`);
  }
  return value;
}

/** Retry settings of model calls, camelCase in, the wire's snake_case out; every field optional. */
export function modelRetry(
  field: string,
  value: unknown,
): { max_attempts?: number; max_wait_seconds?: number; backoff_seconds?: number; max_backoff_seconds?: number } {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(field, `${show(value)} is not an object like { maxAttempts: 3 }`);
  }
  const given = value as Record<string, unknown>;
  const names: Record<string, string> = {
    maxAttempts: "max_attempts", maxWaitSeconds: "max_wait_seconds", backoffSeconds: "backoff_seconds", maxBackoffSeconds: "max_backoff_seconds",
  };
  const out: Record<string, number> = {};
  for (const [key, item] of Object.entries(given)) {
    const wire = names[key];
    if (wire === undefined) throw new ValidationError(`${field}.${key}`, `is not a setting; use ${Object.keys(names).join(", ")}`);
    if (item === undefined) continue;
    out[wire] = key === "maxAttempts" ? count(`${field}.${key}`, item) : seconds(`${field}.${key}`, item);
  }
  return out;
}

/** A client-side wait: any number of seconds greater than 0. */
export function positive(field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new ValidationError(field, `${show(value)} is not a number of seconds greater than 0`);
  }
  return value;
}

export function input(field: string, value: unknown): string | Record<string, unknown>[] {
  if (typeof value === "string") return text(field, value, 0, 200_000);
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        throw new ValidationError(`${field}[${i}]`, `must be an object (a Responses-API input item), not ${kind(item)}`);
      }
    });
    return value as Record<string, unknown>[];
  }
  throw new ValidationError(field, `must be a string or a list of Responses-API input items, not ${kind(value)}`);
}

export function metadata(field: string, value: unknown): Record<string, string> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(field, `must be an object of strings, not ${kind(value)}`);
  }
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== "string") throw new ValidationError(`${field}.${key}`, `must be a string, not ${kind(item)}`);
  }
  return value as Record<string, string>;
}

export function jsonObject(field: string, value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(field, `must be a JSON object, not ${kind(value)}`);
  }
  try {
    JSON.stringify(value);
  } catch (error) {
    throw new ValidationError(field, `cannot be sent as JSON (${(error as Error).message})`);
  }
  return value as Record<string, unknown>;
}

const SESSION_POLICIES = ["enqueue", "reject", "interrupt"] as const;

export function sessionPolicy(field: string, value: unknown): (typeof SESSION_POLICIES)[number] {
  if (typeof value !== "string" || !(SESSION_POLICIES as readonly string[]).includes(value)) {
    throw new ValidationError(field, `${JSON.stringify(value)} is not one of enqueue, reject, interrupt`);
  }
  return value as (typeof SESSION_POLICIES)[number];
}

export function boolean(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new ValidationError(field, `must be true or false, not ${kind(value)}`);
  return value;
}

// The longest month each is ever (February: 29 days, in leap years).
const MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/**
 * A cron of 5 fields (minute first) or 6 (seconds first), refused when it can never fire: days of the
 * month that none of its months has (`0 0 31 2 *`), as the scheduler refuses it. The rest of the cron
 * syntax (`L`, `W`, `#`, ...) is the scheduler's to check.
 */
export function cron(field: string, value: unknown): string {
  text(field, value, 1, 200);
  const crontab = value as string;
  const fields = crontab.trim() === "" ? [] : crontab.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) {
    throw new ValidationError(field, `${show(crontab)} has ${fields.length} fields`, "use 5 fields (minute hour day month weekday) or 6 with seconds first");
  }
  const [day, month, weekday] = fields.slice(-3);
  // With a weekday too, a day matches either (cron's OR), and every month has each weekday.
  const days = weekday === "*" || weekday === "?" ? cronValues(day, 1, 31) : undefined;
  const months = cronValues(month, 1, 12, MONTH_NAMES);
  if (days && months && months.every((m) => Math.min(...days) > MONTH_DAYS[m - 1])) {
    throw new ValidationError(
      field,
      `${show(crontab)} never fires: no time in the next 50 years matches it (a day its months do not have, such as 31 February)`,
      "use days every chosen month has, or 'L' for the last day of the month",
    );
  }
  return crontab;
}

/** The values of a plain cron field (lists, ranges, steps, names); undefined for any other syntax. */
function cronValues(expr: string, min: number, max: number, names: string[] = []): number[] | undefined {
  const number = (token: string): number | undefined => {
    const named = names.indexOf(token.toLowerCase());
    if (named >= 0) return named + min;
    return /^\d+$/.test(token) ? Number(token) : undefined;
  };
  const values: number[] = [];
  for (const part of expr.split(",")) {
    const [range, stepText, ...rest] = part.split("/");
    const step = stepText === undefined ? 1 : /^\d+$/.test(stepText) ? Number(stepText) : 0;
    if (rest.length > 0 || step < 1) return undefined;
    let low: number | undefined;
    let high: number | undefined;
    if (range === "*") [low, high] = [min, max];
    else {
      const [first, last, ...more] = range.split("-");
      if (more.length > 0) return undefined;
      low = number(first);
      high = last === undefined ? (stepText === undefined ? low : max) : number(last);
    }
    if (low === undefined || high === undefined || low < min || high > max || low > high) return undefined;
    for (let v = low; v <= high; v += step) values.push(v);
  }
  return values;
}
