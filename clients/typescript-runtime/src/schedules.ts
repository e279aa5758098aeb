/** Cron schedules of agent runs (the guide's `createScheduledAgentWorkflow`), on DBOS's schedules: stored in
 * the runtime's database, each tick fired once across every process on it. */

import { createHash } from "node:crypto";

import { DBOS } from "@dbos-inc/dbos-sdk";
import { RunState, type Agent, type AgentInputItem } from "@openai/agents";

import { DEFAULT_MAX_TURNS, ensureDBOSLaunched } from "./config.js";
import { ValidationError } from "./errors.js";
import { DatabaseSession, hasSessionFactory, liveSessions } from "./sessions.js";
import { agentRun, prepare, type RunSpec } from "./workflow.js";

/** The tick's workflow in DBOS: a rename would strand the schedules made before it. */
const TICK = "timestep.ts.schedule_tick";

/** One tick: the agent's run, as its own workflow `<schedule>@<tick time>` (so a tick fired again starts
 * nothing new), started in the process that fired the tick (it must have registered the agent). */
const tick = DBOS.registerWorkflow(async (scheduledDate: Date, spec: RunSpec & { schedule: string }): Promise<void> => {
  const { schedule, ...run } = spec;
  await DBOS.startWorkflow(agentRun, { workflowID: `${schedule}@${new Date(scheduledDate).toISOString()}` })(run);
}, { name: TICK });

export interface ScheduleInfo {
  name: string;
  crontab: string;
  agent: string;
  /** DBOS's: `ACTIVE` or `PAUSED`. */
  status: string;
  /** When it last fired (ISO 8601), or null before its first tick. */
  lastFiredAt: string | null;
}

/** 5 fields (minute first) or 6 (seconds first), as on the Python side. */
function checkCrontab(crontab: unknown): string {
  const fields = typeof crontab === "string" ? crontab.trim().split(/\s+/) : [];
  if (fields.length !== 5 && fields.length !== 6) {
    throw new ValidationError("crontab", `${JSON.stringify(crontab)} is not a cron expression`, "give 5 fields (minute hour day month weekday), or 6 with seconds first");
  }
  return fields.join(" ");
}

/**
 * Run `agent` on a cron schedule; returns the schedule's name. Creating a name again replaces it. Each tick
 * starts one run (workflow id `<name>@<tick time>`) in a process that launched with the agent registered:
 * register the same agents in every process of the application. A session is made again for each tick from
 * its id: a `DatabaseSession`, or any session with a session factory registered.
 */
export async function createScheduledAgentWorkflow(
  crontab: string,
  agent: Agent<any, any>,
  inputItems: string | AgentInputItem[],
  session?: unknown,
  stream = false,
  name?: string,
): Promise<string> {
  const cron = checkCrontab(crontab);
  if (inputItems instanceof RunState) {
    throw new ValidationError("inputItems", "is a RunState", "a schedule starts fresh runs: pass a string or input items");
  }
  if (session !== undefined && session !== null && !(session instanceof DatabaseSession) && !hasSessionFactory()) {
    throw new ValidationError(
      "session", "is made again from its id for each tick, and this process has no session factory",
      "pass a DatabaseSession, or call registerSessionFactory((id) => ...) first",
    );
  }
  const { id, spec } = await prepare(agent, inputItems, session, stream, undefined, DEFAULT_MAX_TURNS, undefined, undefined, {});
  liveSessions.delete(id);  // no run has that id: each tick makes its session again from the spec
  const scheduleName = name ?? `${agent.name.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 60)}-${
    createHash("sha256").update(JSON.stringify([cron, agent.name, inputItems, spec.sessionId ?? null])).digest("hex").slice(0, 12)}`;
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(scheduleName)) {
    throw new ValidationError("name", `${JSON.stringify(scheduleName)} is not a schedule name`, "use 1-100 letters, digits, '_' and '-'");
  }
  await ensureDBOSLaunched();
  if (await DBOS.getSchedule(scheduleName)) await DBOS.deleteSchedule(scheduleName);
  try {
    await DBOS.createSchedule({ scheduleName, workflowFn: tick, schedule: cron, context: { ...spec, schedule: scheduleName } });
  } catch (e) {
    if (/cron|schedule/i.test((e as Error).message)) throw new ValidationError("crontab", `${JSON.stringify(cron)}: ${(e as Error).message}`, "give a valid cron expression");
    throw e;
  }
  return scheduleName;
}

/** The schedules of agent runs in the runtime's database, by name. */
export async function listSchedules(): Promise<ScheduleInfo[]> {
  await ensureDBOSLaunched();
  const found = await DBOS.listSchedules({ workflowName: TICK });
  return found
    .map((s) => ({
      name: s.scheduleName, crontab: s.schedule, agent: (s.context as { agent?: string } | null)?.agent ?? "", status: s.status,
      lastFiredAt: s.lastFiredAt === null ? null : new Date(s.lastFiredAt).toISOString(),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Delete schedule `name`; false when there was none. Runs already started go on. */
export async function deleteSchedule(name: string): Promise<boolean> {
  await ensureDBOSLaunched();
  if (!(await DBOS.getSchedule(name))) return false;
  await DBOS.deleteSchedule(name);
  return true;
}
