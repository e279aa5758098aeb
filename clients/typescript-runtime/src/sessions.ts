/** Sessions whose every read and write is a step, made again after a crash: Timestep's own
 * (`DatabaseSession`, in the runtime's database) or the caller's, by a factory. */

import { DBOS } from "@dbos-inc/dbos-sdk";
import type { AgentInputItem, Session } from "@openai/agents";

import { ConfigurationError, ValidationError } from "./errors.js";
import { database } from "./store.js";


/** A conversation's history kept in the runtime's PostgreSQL database (table `timestep.session_items`), so
 * every process on the database sees it: what a run from the bus with a `session_id` uses when the process
 * registered no session factory. A run given one resumes on it after a crash with no factory needed. */
export class DatabaseSession implements Session {
  readonly sessionId: string;

  constructor(sessionId: string) {
    if (typeof sessionId !== "string" || !sessionId || sessionId.length > 255 || /[\u0000-\u001f\u007f]/.test(sessionId)) {
      throw new ValidationError("sessionId", `${JSON.stringify(sessionId)} is not a session id`, "give 1-255 characters without control characters");
    }
    this.sessionId = sessionId;
  }

  async getSessionId(): Promise<string> {
    return this.sessionId;
  }

  /** The history, oldest first (with `limit`: its last `limit` items). */
  async getItems(limit?: number): Promise<AgentInputItem[]> {
    const db = await database();
    const { rows } = limit === undefined
      ? await db.query("SELECT item FROM timestep.session_items WHERE session_id = $1 ORDER BY id", [this.sessionId])
      : await db.query(
        "SELECT item FROM (SELECT id, item FROM timestep.session_items WHERE session_id = $1 ORDER BY id DESC LIMIT $2) last ORDER BY id",
        [this.sessionId, Math.max(0, Math.floor(limit))],
      );
    return rows.map((r) => r.item as AgentInputItem);
  }

  async addItems(items: AgentInputItem[]): Promise<void> {
    if (!items.length) return;
    const db = await database();
    // One statement: the items of one write are stored together, in order, or not at all.
    await db.query(
      "INSERT INTO timestep.session_items (session_id, item) SELECT $1, value FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY ORDER BY ordinality",
      [this.sessionId, JSON.stringify(items)],
    );
  }

  async popItem(): Promise<AgentInputItem | undefined> {
    const db = await database();
    const { rows } = await db.query(
      "DELETE FROM timestep.session_items WHERE id = (SELECT max(id) FROM timestep.session_items WHERE session_id = $1) RETURNING item",
      [this.sessionId],
    );
    return rows[0]?.item as AgentInputItem | undefined;
  }

  async clearSession(): Promise<void> {
    await (await database()).query("DELETE FROM timestep.session_items WHERE session_id = $1", [this.sessionId]);
  }
}


export const liveSessions = new Map<string, Session>();
let sessionFactory: ((sessionId: string) => Session | Promise<Session>) | undefined;

/** How this process makes a run's session again from its id, for a run that resumes here after a crash (the
 * caller's session object died with its process). Register it at start-up, before `ensureDBOSLaunched()`. */
export function registerSessionFactory(factory: (sessionId: string) => Session | Promise<Session>): void {
  if (typeof factory !== "function") throw new ValidationError("factory", "is not a function", "pass (sessionId) => new MySession(sessionId)");
  sessionFactory = factory;
}

/** `inner` with each read and write a step (`session.get_items`, `session.add_items`, `session.pop_item`,
 * `session.clear`): a recovered run reads what its first execution read, and writes nothing twice. */
function durableSession(inner: Session, sessionId: string): Session {
  const step = <T>(name: string, fn: () => Promise<T>) => DBOS.runStep(async () => {
    const value = await fn();
    return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
  }, { name });
  return {
    getSessionId: async () => sessionId,
    getItems: (limit?: number) => step("session.get_items", () => inner.getItems(limit)),
    addItems: (items: AgentInputItem[]) => step("session.add_items", () => inner.addItems(items)),
    popItem: () => step("session.pop_item", () => inner.popItem()),
    clearSession: () => step("session.clear", () => inner.clearSession()),
    ...(inner.prepareHistoryItemForModelInput ? { prepareHistoryItemForModelInput: inner.prepareHistoryItemForModelInput.bind(inner) } : {}),
    ...(inner.prepareHistoryItemsForPersistenceComparison
      ? { prepareHistoryItemsForPersistenceComparison: inner.prepareHistoryItemsForPersistenceComparison.bind(inner) } : {}),
  } as Session;
}

export function hasSessionFactory(): boolean {
  return sessionFactory !== undefined;
}

/** Where a run's session comes from when its object is not at hand: `database` for a `DatabaseSession`
 * (and a run from the bus in a process with no factory); else the factory. */
export type SessionStore = "database" | "factory";

export function storeFor(session: Session | undefined): SessionStore {
  return session instanceof DatabaseSession || (!session && !sessionFactory) ? "database" : "factory";
}

export async function sessionOf(runId: string, sessionId: string, store: SessionStore = "factory"): Promise<Session> {
  const inner = liveSessions.get(runId)
    ?? (store === "database" ? new DatabaseSession(sessionId) : sessionFactory ? await sessionFactory(sessionId) : undefined);
  if (!inner) {
    throw new ConfigurationError(
      `session: run ${JSON.stringify(runId)} uses session ${JSON.stringify(sessionId)}, which this process cannot make again; ` +
      "call registerSessionFactory((id) => ...) at start-up, before ensureDBOSLaunched()",
    );
  }
  return durableSession(inner, sessionId);
}

