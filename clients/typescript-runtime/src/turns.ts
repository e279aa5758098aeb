/**
 * One conversation, one run at a time: the turns of a session's runs, as on the Python side.
 *
 * A run with a session takes a turn before it starts: a row in `timestep.session_turns` whose id is its
 * place in the order of arrival across every process on the database. When an earlier run of the session
 * is unfinished, the run's session policy says what happens:
 * - `enqueue` (default): it waits, durably, until every earlier run ended, then runs on the history that
 *   holds their turns;
 * - `reject`: it is refused with `SessionBusyError`, naming the unfinished run; nothing ran;
 * - `interrupt`: the earlier runs are cancelled (each stops at its next step) and it goes on with the
 *   history so far.
 *
 * Joining is one step (a recovered run keeps its place and never joins twice); each look at whether the
 * turn has come is a step too, and between looks the run waits on a durable `recv`, woken by the run that
 * releases the turn, and at most `MAX_WAIT_SECONDS` apart (so a run whose last process died, which never
 * released, is noticed all the same).
 */

import { DBOS } from "@dbos-inc/dbos-sdk";

import { outside } from "./config.js";
import { SessionBusyError } from "./errors.js";
import { database, transaction } from "./store.js";

export type SessionPolicy = "enqueue" | "reject" | "interrupt";
export const SESSION_POLICIES: readonly SessionPolicy[] = ["enqueue", "reject", "interrupt"];

/** The topic on which a waiting run is told that a turn was released. */
export const TURN_TOPIC = "timestep.turn";
/** What a cancelled run waiting for a decision is woken with (see `awaitDecisions`). */
const WAKE = "timestep.wake";
const FIRST_WAIT_SECONDS = 0.5;
const MAX_WAIT_SECONDS = 60;
/** A run cancelled this recently may still be finishing its step: it releases its turn itself as it stops. */
const CANCEL_GRACE_SECONDS = 10;

/** Join the session's order of arrival and wait for this run's turn. Throws SessionBusyError for `reject`
 * when an earlier run is unfinished. */
export async function takeTurn(sessionId: string, runId: string, policy: SessionPolicy): Promise<void> {
  const { busy, blocker: first, position } = await DBOS.runStep(() => join(sessionId, runId, policy), { name: "session.join" });
  if (busy !== null) throw new SessionBusyError(sessionId, busy);
  let blocker = first;
  let wait = FIRST_WAIT_SECONDS;
  while (blocker !== null) {
    await DBOS.recv(TURN_TOPIC, wait);
    wait = Math.min(wait * 2, MAX_WAIT_SECONDS);
    blocker = await DBOS.runStep(async () => (await unfinishedBefore(sessionId, position))[0] ?? null, { name: "session.turn" });
  }
}

/** The run ended (completed, failed, cancelled, refused): the next run of its session may go. Not a step
 * (a cancelled run records nothing more); idempotent, so a replay may do it again. */
export async function releaseTurn(runId: string): Promise<void> {
  const sessionId = await dropTurn(runId);
  if (sessionId === undefined) return;
  const waiting = await (await database()).query(
    "SELECT run_id FROM timestep.session_turns WHERE session_id = $1 ORDER BY id LIMIT 20", [sessionId],
  );
  const client = await outside();
  for (const { run_id: other } of waiting.rows as { run_id: string }[]) {
    // A waiter not told looks again by itself within MAX_WAIT_SECONDS.
    await client.send(other, "released", TURN_TOPIC, `${other}.after.${runId}`).catch(() => {});
  }
}

/** The first unfinished run of the session other than `besides`, or undefined. */
export async function unfinished(sessionId: string, besides?: string): Promise<string | undefined> {
  return (await unfinishedBefore(sessionId, null, besides))[0];
}

async function join(sessionId: string, runId: string, policy: SessionPolicy): Promise<{ position: number; busy: string | null; blocker: string | null }> {
  const position = await transaction(async (c) => {
    // One place at a time per session, so the order of ids is the order of commits.
    await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`timestep.turn:${sessionId}`]);
    const held = await c.query("SELECT id FROM timestep.session_turns WHERE run_id = $1", [runId]);
    if (held.rows.length) return Number(held.rows[0].id);
    const made = await c.query(
      "INSERT INTO timestep.session_turns (session_id, run_id, created_at) VALUES ($1, $2, $3) RETURNING id",
      [sessionId, runId, Date.now() / 1000],
    );
    return Number(made.rows[0].id);
  });
  const earlier = await unfinishedBefore(sessionId, position);
  if (policy === "reject" && earlier.length) {
    await dropTurn(runId);
    return { position, busy: earlier[0]!, blocker: null };
  }
  if (policy === "interrupt") {
    const client = await outside();
    for (const other of earlier) {
      await client.cancelWorkflow(other);
      // A run waiting for a decision or for its turn wakes now, and stops at its next step.
      await client.send(other, WAKE, "timestep.decision", `${other}.interrupted`).catch(() => {});
      await client.send(other, WAKE, TURN_TOPIC, `${other}.interrupted.turn`).catch(() => {});
    }
  }
  return { position, busy: null, blocker: (await unfinishedBefore(sessionId, position))[0] ?? null };
}

/** The session's unfinished runs before `position` (all when null), oldest first; the rows of runs that
 * ended without releasing their turn are dropped on the way. */
async function unfinishedBefore(sessionId: string, position: number | null, besides?: string): Promise<string[]> {
  const db = await database();
  const { rows } = await db.query(
    `SELECT run_id, created_at FROM timestep.session_turns WHERE session_id = $1 ${position === null ? "" : "AND id < $2"} ORDER BY id`,
    position === null ? [sessionId] : [sessionId, position],
  );
  const client = await outside();
  const found: string[] = [];
  for (const { run_id: other, created_at: created } of rows as { run_id: string; created_at: number }[]) {
    if (other === besides) continue;
    const status = await client.getWorkflow(other);
    const now = Date.now() / 1000;
    if (!status) {
      if (now - created < CANCEL_GRACE_SECONDS) found.push(other);  // its workflow is being started
      else await dropTurn(other);
    } else if (status.status === "PENDING" || status.status === "ENQUEUED") {
      found.push(other);
    } else if (status.status === "CANCELLED" && now - Number(status.updatedAt ?? 0) / 1000 < CANCEL_GRACE_SECONDS) {
      found.push(other);  // it releases its turn itself as it stops
    } else {
      await dropTurn(other);
    }
  }
  return found;
}

/** The run's turn removed; the session it was of (undefined: it had none). */
async function dropTurn(runId: string): Promise<string | undefined> {
  const { rows } = await (await database()).query("DELETE FROM timestep.session_turns WHERE run_id = $1 RETURNING session_id", [runId]);
  return rows[0]?.session_id as string | undefined;
}
