"""An agent whose code changes between two `timestep up` processes (`--agents upgrade_agents`):
UPGRADE_VARIANT=v1 (the default) or v2 (other instructions, and `send_email` gains a `cc` parameter)."""

from __future__ import annotations

import os

from agents import Agent, function_tool

from timestep import register_agent

VARIANT = os.environ.get("UPGRADE_VARIANT", "v1")

if VARIANT == "v1":

    @function_tool(needs_approval=True)
    def send_email(to: str) -> str:
        return f"sent to {to}"

    INSTRUCTIONS = "Send the e-mails you are asked to."
else:

    @function_tool(needs_approval=True)
    def send_email(to: str, cc: str = "") -> str:  # noqa: F811
        return f"sent to {to} (v2)"

    INSTRUCTIONS = "Send the e-mails you are asked to, politely."

register_agent(Agent(name="upgrading-mailer", instructions=INSTRUCTIONS, tools=[send_email]))
