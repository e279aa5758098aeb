"""A tiny stdio MCP server for tests (the `mcp` package's MCPServer, run over stdio).

    python tests/mcp_server.py LOG_DIR [PORT]

Over stdio; with PORT, over streamable HTTP at http://127.0.0.1:PORT/mcp.

Each tool call, prompt and resource read appends a line to LOG_DIR/calls.log; `slow_add` blocks while LOG_DIR/block exists.
With MCP_EXTRA_TOOL set it also offers `multiply`. Each server appends its pid to LOG_DIR/mcp_servers.pid: the stdio
client starts it in a session of its own, so a test that crashes the machine kills it by pid.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

log_dir = Path(sys.argv[1])
server = MCPServer("Calculator")
with (log_dir / "mcp_servers.pid").open("a") as pids:
    pids.write(f"{os.getpid()}\n")


def log(line: str) -> None:
    with (log_dir / "calls.log").open("a") as f:
        f.write(f"{line} pid={os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    log(f"mcp:add:{a}+{b}")
    return a + b


@server.tool()
async def slow_add(a: int, b: int) -> int:
    """Add two numbers, slowly."""
    log(f"mcp:slow_add:{a}+{b}:start")
    while (log_dir / "block").exists():
        await asyncio.sleep(0.05)
    log(f"mcp:slow_add:{a}+{b}:end")
    return a + b


@server.prompt()
def style(tone: str) -> str:
    """How to answer."""
    log(f"mcp:prompt:style:{tone}")
    return f"Answer in a {tone} tone."


@server.resource("config://units")
def units() -> str:
    """The units to answer in."""
    log("mcp:resource:units")
    return "metric"


if os.environ.get("MCP_EXTRA_TOOL"):  # the server as changed since a run listed its tools

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        log(f"mcp:multiply:{a}*{b}")
        return a * b


if __name__ == "__main__":
    if len(sys.argv) > 2:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
