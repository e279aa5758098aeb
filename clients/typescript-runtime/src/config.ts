/** DBOS configured for Timestep: the same settings as the Python side. */

import { DBOS, DBOSClient } from "@dbos-inc/dbos-sdk";

import { ConfigurationError, ValidationError } from "./errors.js";
import { retryPolicy } from "./modelRetry.js";
import { closeDatabase } from "./store.js";


/** The workflow's name in DBOS: a rename would strand the runs in flight. */
export const WORKFLOW = "timestep.ts.agent_run";
export const DEFAULT_MAX_TURNS = 10;

export interface DBOSOptions {
  /** The system database, `postgresql://...` (default: PG_CONNECTION_URI). */
  systemDatabaseUrl?: string;
  /** The application's name in DBOS (default `timestep`). */
  name?: string;
}

let configured: {
  name: string; systemDatabaseUrl: string; executorID: string; applicationVersion: string; logLevel: string; systemDatabasePoolSize: number;
  schedulerPollingIntervalMs: number;
} | undefined;
let launched = false;

/** TIMESTEP_LOG_LEVEL (Python's names, default WARNING) as DBOS's TypeScript SDK names it. */
function logLevel(level: string): string {
  const names: Record<string, string> = { DEBUG: "debug", INFO: "info", WARNING: "warn", WARN: "warn", ERROR: "error", CRITICAL: "error" };
  const name = names[level.toUpperCase()];
  if (!name) throw new ValidationError("TIMESTEP_LOG_LEVEL", `${JSON.stringify(level)} is not a log level`, "use DEBUG, INFO, WARNING or ERROR");
  return name;
}

/** TIMESTEP_OPENAI_API (default `responses`): `chat_completions` for OpenAI-compatible servers (Ollama, vLLM,
 * LM Studio) that have no Responses API. Read where a run resolves its model by name. */
export function openaiApi(): "responses" | "chat_completions" {
  const raw = (process.env.TIMESTEP_OPENAI_API || "responses").trim().toLowerCase().replaceAll("-", "_");
  if (raw !== "responses" && raw !== "chat_completions") {
    throw new ValidationError(
      "TIMESTEP_OPENAI_API", `${JSON.stringify(raw)} is not an OpenAI API`, "set it to chat_completions (Ollama, vLLM, LM Studio) or responses",
    );
  }
  return raw;
}

/** TIMESTEP_DB_POOL_SIZE (default 20, at least 3): the PostgreSQL connections this process may hold for runs. */
function poolSize(value: string): number {
  const size = Number(value);
  if (!Number.isInteger(size) || size < 3 || size > 1000) {
    throw new ValidationError("TIMESTEP_DB_POOL_SIZE", `${JSON.stringify(value)} is not a number of connections`, "give a whole number from 3 to 1000");
  }
  return size;
}

/** The pool size split as on the Python side: a quarter (at least one) for the runtime's own tables, one for
 * DBOS's client outside workflows, the rest for DBOS. */
export function poolShares(size: number): { dbos: number; tables: number; client: number } {
  const tables = Math.max(1, Math.floor(size / 4));
  return { dbos: size - tables - 1, tables, client: 1 };
}

let shares = poolShares(20);

/** The configured pool's shares (configured with the defaults first if needed). */
export function configuredPoolShares(): { dbos: number; tables: number; client: number } {
  if (!configured) configureDBOS();
  return shares;
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/**
 * Configure DBOS for Timestep (idempotent): the system database from `options` or PG_CONNECTION_URI,
 * the executor id from TIMESTEP_EXECUTOR_ID (default `local`) and the application version from
 * TIMESTEP_APP_VERSION (default `timestep-1`), its share of TIMESTEP_DB_POOL_SIZE (default 20; see poolShares) and its
 * log level from TIMESTEP_LOG_LEVEL (default WARNING): the same settings as the Python side. A process
 * recovers the unfinished runs of its executor id and application version when it launches.
 */
export function configureDBOS(options: DBOSOptions = {}): void {
  const url = options.systemDatabaseUrl ?? process.env.PG_CONNECTION_URI;
  if (!url) {
    throw new ValidationError(
      "PG_CONNECTION_URI", "is not set, and DBOS's TypeScript SDK stores runs in PostgreSQL only",
      "set PG_CONNECTION_URI=postgresql://user:password@host:5432/database, or pass configureDBOS({ systemDatabaseUrl })",
    );
  }
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new ValidationError(
      options.systemDatabaseUrl ? "systemDatabaseUrl" : "PG_CONNECTION_URI", `${JSON.stringify(redact(url))} is not a postgresql:// URL`,
      "give e.g. postgresql://user:password@host:5432/database (DBOS's TypeScript SDK has no SQLite)",
    );
  }
  openaiApi();  // bad values are refused here, before any run
  retryPolicy();
  const name = options.name ?? "timestep";
  if (!/^[a-z0-9_-]{3,256}$/.test(name)) {
    throw new ValidationError("name", `${JSON.stringify(name)} is not a valid application name`, "use 3-256 characters of a-z, 0-9, '_' and '-'");
  }
  const split = poolShares(poolSize(process.env.TIMESTEP_DB_POOL_SIZE || "20"));
  const config = {
    name,
    systemDatabaseUrl: url,
    executorID: process.env.TIMESTEP_EXECUTOR_ID || "local",
    applicationVersion: process.env.TIMESTEP_APP_VERSION || "timestep-1",
    logLevel: logLevel(process.env.TIMESTEP_LOG_LEVEL || "WARNING"),
    systemDatabasePoolSize: split.dbos,
    // A schedule made or deleted in another process is seen within a second, as on the Python side.
    schedulerPollingIntervalMs: 1000,
  };
  if (configured && JSON.stringify(configured) === JSON.stringify(config)) return;
  if (launched) {
    throw new ConfigurationError(
      `Timestep is already launched on ${redact(configured!.systemDatabaseUrl)}; call configureDBOS() with other settings only before ensureDBOSLaunched()`,
    );
  }
  DBOS.setConfig(config);
  configured = config;
  shares = split;
}

/** Launch DBOS once (idempotent; configures it with the defaults first if needed). Runs of this
 * executor id left unfinished by a process that stopped resume now: register their agents first. */
export async function ensureDBOSLaunched(): Promise<void> {
  if (launched) return;
  if (!configured) configureDBOS();
  await DBOS.launch();
  launched = true;
}

/** Shut DBOS down (tests and clean exits); the process's unfinished runs resume in the next one. */
export async function shutdownDBOS(): Promise<void> {
  if (!launched) return;
  await reader?.destroy();
  reader = undefined;
  await closeDatabase();
  await DBOS.shutdown();
  launched = false;
}


/** The configured system database's URL (configured with the defaults first if needed). */
export function configuredDatabaseUrl(): string {
  if (!configured) configureDBOS();
  return configured!.systemDatabaseUrl;
}

let reader: DBOSClient | undefined;

/** DBOS's client on this process's database: reads, sends and cancels outside any workflow's record
 * (inside, a read is a step, and a stopped workflow runs none). */
export async function outside(): Promise<DBOSClient> {
  reader ??= await DBOSClient.create({ systemDatabaseUrl: configuredDatabaseUrl(), systemDatabasePoolSize: configuredPoolShares().client });
  return reader;
}

/** A run's status read outside its workflow. */
export async function statusOutside(runId: string): Promise<string | undefined> {
  return (await (await outside()).getWorkflow(runId))?.status;
}

