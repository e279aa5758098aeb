"""The demo's agent. `timestep up --agents actors.cli.demo_agents` hosts it."""

from __future__ import annotations

import asyncio

from agents import Agent, function_tool

from timestep.durable.registry import register_agent


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny and 21 C in {city}"


@function_tool
async def think(seconds: float) -> str:
    """Take a moment (keeps the demo's serial queue busy)."""
    await asyncio.sleep(min(seconds, 5))
    return f"thought for {seconds} s"


@function_tool(needs_approval=True)
def send_email(to: str, subject: str = "Hello") -> str:
    """Send an email (a human approves it first)."""
    return f"email {subject!r} sent to {to}"


def demo_agent() -> Agent:
    return Agent(
        name="demo-assistant",
        instructions="You help with the weather and send emails. Use the tools.",
        tools=[get_weather, think, send_email],
    )


register_agent(demo_agent())
