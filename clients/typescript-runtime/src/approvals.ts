/** Deciding on the tool calls a run waits on, and its saved state. */

import { DBOS } from "@dbos-inc/dbos-sdk";
import { Agent, RunState } from "@openai/agents";

import { ensureDBOSLaunched } from "./config.js";
import { NotWaitingError, UnknownRunError, ValidationError, checkRunId } from "./errors.js";
import { DECISION_TOPIC, STATE_EVENT, WAITING_EVENT, type Approval, type Decision } from "./workflow.js";


/** The saved state of an interrupted run, as the Python side's `RunStateStore`: load it, approve or
 * reject its interruptions, and pass it to `runAgentWorkflow` to go on. A run saves it by itself when it
 * is interrupted (and clears it when it completes). */
export class RunStateStore<A extends Agent<any, any> = Agent<any, any>> {
  readonly agent: A;
  readonly workflowId: string;

  constructor({ agent, workflowId }: { agent: A; workflowId: string }) {
    if (!(agent instanceof Agent)) throw new ValidationError("agent", "is not an Agent of @openai/agents", "pass the agent the state belongs to");
    checkRunId("workflowId", workflowId);
    this.agent = agent;
    this.workflowId = workflowId;
  }

  /** The saved state, ready to approve or reject and resume; undefined when nothing is saved. */
  async load(): Promise<RunState<any, A> | undefined> {
    await ensureDBOSLaunched();
    const saved = await DBOS.getEvent<string | null>(this.workflowId, STATE_EVENT, 0);
    if (typeof saved !== "string") return undefined;
    return RunState.fromString(this.agent, saved);
  }
}

/** The tool calls a run waiting for approval (`waitForApproval`) still waits on. */
export async function pendingApprovals(workflowId: string): Promise<Approval[]> {
  checkRunId("workflowId", workflowId);
  await ensureDBOSLaunched();
  const status = await DBOS.getWorkflowStatus(workflowId);
  if (!status) throw new UnknownRunError(`workflowId: no run ${JSON.stringify(workflowId)}; check the id`);
  if (!["PENDING", "ENQUEUED"].includes(status.status)) return [];
  return (await DBOS.getEvent<Approval[]>(workflowId, WAITING_EVENT, 0)) ?? [];
}

async function decide(workflowId: string, decision: Decision): Promise<void> {
  checkRunId("workflowId", workflowId);
  if (typeof decision.callId !== "string" || !decision.callId) {
    throw new ValidationError("callId", `${JSON.stringify(decision.callId)} is not a tool call id`, "pass the callId of one of the run's interruptions");
  }
  if (decision.always !== undefined && typeof decision.always !== "boolean") {
    throw new ValidationError("always", `${JSON.stringify(decision.always)} is not true or false`, "pass a boolean, or leave it out");
  }
  if (decision.arguments !== undefined) {
    let parsed: unknown;
    try {
      parsed = typeof decision.arguments === "string" ? JSON.parse(decision.arguments) : undefined;
    } catch {
      parsed = undefined;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ValidationError("arguments", `${JSON.stringify(decision.arguments)} is not a JSON object`, "pass the tool's arguments as a JSON object string, e.g. '{\"city\": \"Paris\"}'");
    }
  }
  const waiting = await pendingApprovals(workflowId);
  if (!waiting.some((a) => a.callId === decision.callId)) {
    const status = (await DBOS.getWorkflowStatus(workflowId))!.status;
    const why = !["PENDING", "ENQUEUED"].includes(status)
      ? `run ${JSON.stringify(workflowId)} has ended (${status.toLowerCase()})`
      : waiting.length
        ? `run ${JSON.stringify(workflowId)} waits for ${waiting.map((a) => JSON.stringify(a.callId)).join(", ")}, not ${JSON.stringify(decision.callId)}`
        : `run ${JSON.stringify(workflowId)} is not waiting for a decision (it is not interrupted, or did not ask to wait: waitForApproval)`;
    throw new NotWaitingError(`callId: ${why}; check pendingApprovals(workflowId)`);
  }
  // One decision per call and kind: sending the same one twice delivers it once.
  await DBOS.send(workflowId, decision, DECISION_TOPIC, `${workflowId}.${decision.callId}.${decision.type}`);
}

/** Approve a tool call a run waits on (`waitForApproval`), perhaps with edited `arguments` (a JSON object
 * string) or `always` (every later call of that tool in the run too); the run goes on with it. */
export async function approveToolCall(
  workflowId: string, callId: string, options: { arguments?: string; always?: boolean; decidedBy?: string } = {},
): Promise<void> {
  await decide(workflowId, { type: "approve", callId, ...options });
}

/** Reject a tool call a run waits on; the model is told `message` (default: the SDK's) and the run goes on. */
export async function rejectToolCall(
  workflowId: string, callId: string, options: { message?: string; always?: boolean; decidedBy?: string } = {},
): Promise<void> {
  await decide(workflowId, { type: "reject", callId, ...options });
}

