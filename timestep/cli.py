"""The `timestep` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any

from timestep.errors import TimestepError


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _status_row(w: Any) -> dict[str, Any]:
    return {
        "workflow_id": w.workflow_id,
        "status": w.status,
        "name": w.name,
        "queue": w.queue_name,
        "priority": w.priority,
        "executor": w.executor_id,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    }


async def _workflows(args: argparse.Namespace) -> int:
    from timestep import engine
    from timestep.launch import configure_dbos, ensure_dbos_launched

    configure_dbos()
    ensure_dbos_launched()
    if args.action == "list":
        rows = await engine.list_workflows(limit=args.limit, sort_desc=True, status=args.status)
        if args.json:
            print(json.dumps([_status_row(w) for w in rows], indent=1))
            return 0
        print(f"{'WORKFLOW ID':<44} {'STATUS':<10} {'QUEUE':<14} {'CREATED (UTC)':<20} NAME")
        for w in rows:
            print(f"{w.workflow_id:<44} {w.status:<10} {(w.queue_name or '-'):<14} {_when(w.created_at):<20} {w.name}")
        return 0
    if args.workflow_id is None:
        print(f"timestep workflows {args.action}: give a WORKFLOW_ID", file=sys.stderr)
        return 2
    if args.action == "show":
        status = await engine.status(args.workflow_id)
        if status is None:
            print(f"no workflow {args.workflow_id!r}", file=sys.stderr)
            return 1
        steps = await engine.list_steps(args.workflow_id)
        if args.json:
            row = _status_row(status)
            row["steps"] = [{"step": s["function_id"], "name": s["function_name"], "error": repr(s["error"]) if s["error"] else None} for s in steps]
            print(json.dumps(row, indent=1, default=str))
            return 0
        for key, value in _status_row(status).items():
            print(f"{key:<12} {_when(value) if key.endswith('_at') else value}")
        print("steps:")
        for s in steps:
            error = f"  error: {s['error']!r}" if s["error"] else ""
            print(f"  {s['function_id']:>3}  {s['function_name']}{error}")
        return 0
    if args.action == "cancel":
        await engine.cancel(args.workflow_id)
        print(f"cancelled {args.workflow_id}")
        return 0
    if args.action == "resume":
        await engine.resume(args.workflow_id)
        print(f"resumed {args.workflow_id}")
        return 0
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timestep", description="Durable OpenAI Agents SDK runs on DBOS.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the demo: durable runs with a tool call, an approval and a queue")
    workflows = sub.add_parser("workflows", help="list, show, cancel or resume workflows (runs)")
    workflows.add_argument("action", choices=["list", "show", "cancel", "resume"])
    workflows.add_argument("workflow_id", nargs="?")
    workflows.add_argument("--status", help="list only this status (ENQUEUED, PENDING, SUCCESS, ERROR, CANCELLED)")
    workflows.add_argument("--limit", type=int, default=50)
    workflows.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from timestep import demo

            asyncio.run(demo.main())
            return 0
        if args.command == "workflows":
            return asyncio.run(_workflows(args))
    except TimestepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
