/** Sessions whose every read and write is a step, made again after a crash by a factory. */

import { DBOS } from "@dbos-inc/dbos-sdk";
import type { AgentInputItem, Session } from "@openai/agents";

import { ConfigurationError, ValidationError } from "./errors.js";


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

export async function sessionOf(runId: string, sessionId: string): Promise<Session> {
  const inner = liveSessions.get(runId) ?? (sessionFactory ? await sessionFactory(sessionId) : undefined);
  if (!inner) {
    throw new ConfigurationError(
      `session: run ${JSON.stringify(runId)} uses session ${JSON.stringify(sessionId)}, which this process cannot make again; ` +
      "call registerSessionFactory((id) => ...) at start-up, before ensureDBOSLaunched()",
    );
  }
  return durableSession(inner, sessionId);
}

