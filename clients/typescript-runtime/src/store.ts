/** Timestep's own tables in the runtime's PostgreSQL database (beside DBOS's): session histories and turns, decided approvals. */

import pg from "pg";

import { configuredDatabaseUrl, configuredPoolShares } from "./config.js";


let pool: pg.Pool | undefined;
let ready: Promise<void> | undefined;

/** The tables' schema: made once per database, by whichever process comes first (an advisory lock
 * keeps two processes from making it at once). */
const SCHEMA = `
  CREATE SCHEMA IF NOT EXISTS timestep;
  CREATE TABLE IF NOT EXISTS timestep.session_items (
    id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL,
    item JSONB NOT NULL
  );
  CREATE INDEX IF NOT EXISTS session_items_by_session ON timestep.session_items (session_id, id);
  CREATE TABLE IF NOT EXISTS timestep.session_turns (
    id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL
  );
  CREATE INDEX IF NOT EXISTS session_turns_by_session ON timestep.session_turns (session_id, id);
  CREATE TABLE IF NOT EXISTS timestep.approvals (
    run_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    session_id TEXT,
    queue TEXT,
    requested_at DOUBLE PRECISION NOT NULL,
    deadline DOUBLE PRECISION,
    status TEXT NOT NULL,
    decided_at DOUBLE PRECISION NOT NULL,
    decided_by TEXT,
    message TEXT,
    always BOOLEAN NOT NULL,
    approved_arguments TEXT,
    PRIMARY KEY (run_id, call_id)
  );
  CREATE INDEX IF NOT EXISTS approvals_by_time ON timestep.approvals (requested_at);
`;

/** A pooled connection to the runtime's database, its tables made (DBOS configured first). */
export async function database(): Promise<pg.Pool> {
  if (!pool) {
    const made = new pg.Pool({ connectionString: configuredDatabaseUrl(), max: configuredPoolShares().tables });
    made.on("error", () => {});  // an idle connection lost: the next query opens another
    pool = made;
    ready = inTransaction(made, async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(727274001)");
      await c.query(SCHEMA);
    });
    ready.catch(() => {  // tried again by the next call, on a new pool
      if (pool === made) pool = undefined;
      made.end().catch(() => {});
    });
  }
  const current = pool;
  await ready;
  return current;
}

async function inTransaction<T>(on: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await on.connect();
  try {
    await client.query("BEGIN");
    const value = await fn(client);
    await client.query("COMMIT");
    return value;
  } catch (e) {
    await client.query("ROLLBACK").catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

/** Run `fn` in one transaction. */
export async function transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return inTransaction(await database(), fn);
}

export async function closeDatabase(): Promise<void> {
  const closing = pool;
  pool = undefined;
  ready = undefined;
  await closing?.end();
}
