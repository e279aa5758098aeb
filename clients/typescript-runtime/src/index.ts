/**
 * Durable runs of OpenAI Agents SDK agents written in TypeScript, as Timestep's Python library runs
 * Python agents: `runAgentWorkflow` runs an agent as a DBOS workflow in which each model call and each
 * function tool call is a recorded step. After a crash, the run resumes in the next process that
 * launches with the same executor id: what finished comes back from the record and is not called again.
 *
 * DBOS's TypeScript SDK stores runs in PostgreSQL only (PG_CONNECTION_URI).
 */

export * from "./errors.js";
export { ModelCallError } from "./modelRetry.js";
export { BudgetExceeded, type ModelRetry } from "./limits.js";
export { configureDBOS, ensureDBOSLaunched, shutdownDBOS, type DBOSOptions } from "./config.js";
export { registerAgent, registeredAgents } from "./agents.js";
export { setEventSink, type RunEvent } from "./events.js";
export { DatabaseSession, registerSessionFactory } from "./sessions.js";
export { type SessionPolicy } from "./turns.js";
export {
  RunHandle, runAgentWorkflow, startAgentWorkflow, startBusRun, type Approval, type BusRun, type RunOptions, type RunResult,
} from "./workflow.js";
export { createScheduledAgentWorkflow, deleteSchedule, listSchedules, type ScheduleInfo } from "./schedules.js";
export { DEFAULT_QUEUE, configureQueue, queueAgentWorkflow, type QueuePolicy, type QueueRunOptions } from "./queues.js";
export { RunStateStore, approveToolCall, pendingApprovals, rejectToolCall } from "./approvals.js";
export { serveAgents, type AgentActor, type ServeOptions } from "./actor.js";
