/** The agents registered in this process, by name. */

import { Agent } from "@openai/agents";

import { ValidationError } from "./errors.js";


const agents = new Map<string, Agent<any, any>>();

/** The names of the agents registered in this process. */
export function registeredAgents(): string[] {
  return [...agents.keys()].sort();
}

/** Make `agent` the one its runs use in this process, by its name. A program registers its agents
 * before `ensureDBOSLaunched()`, so the runs recovered at launch find them. Returns `agent`. */
export function registerAgent<A extends Agent<any, any>>(agent: A): A {
  if (!(agent instanceof Agent)) {
    throw new ValidationError("agent", "is not an Agent of @openai/agents", "pass new Agent({ name, instructions, model, tools })");
  }
  if (!agent.name) throw new ValidationError("agent.name", "is empty", "give the agent a name: its runs find it by name");
  agents.set(agent.name, agent);
  return agent;
}

/** The agent registered under `name` here, if any. */
export function agentNamed(name: string): Agent<any, any> | undefined {
  return agents.get(name);
}
