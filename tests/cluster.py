"""A three-node nats-server cluster with JetStream on loopback (its `timestep up` processes: tests/processes.py, `Deployment`).

Used by tests/test_scale_out.py. The configs are written here, from nothing but free ports,
so the test does not depend on any deployment's files.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import nats

from timestep.bus.server import EmbeddedNats, free_port


class NatsCluster:
    """Three nats-servers routed to each other, each with its own JetStream store.

    >>> cluster = NatsCluster(tmp_path); await cluster.start(); cluster.url  # "nats://a,nats://b,nats://c"
    """

    def __init__(self, root: Path, size: int = 3, name: str = "timestep-test") -> None:
        self.names = [f"n{i + 1}" for i in range(size)]
        routes = {n: free_port() for n in self.names}
        self.monitor = {n: free_port() for n in self.names}
        self.nodes: dict[str, EmbeddedNats] = {}
        for n in self.names:
            others = ", ".join(f"nats-route://127.0.0.1:{routes[o]}" for o in self.names if o != n)
            # EmbeddedNats writes a fixed server_name first; a later key in a nats-server config wins.
            config = (
                f"server_name: {n}\n"
                f"http: 127.0.0.1:{self.monitor[n]}\n"
                f"cluster {{\n  name: {name}\n  listen: 127.0.0.1:{routes[n]}\n  routes: [{others}]\n}}\n"
            )
            self.nodes[n] = EmbeddedNats(root / n, port=free_port(), extra_config=config)

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{node.port}" for node in self.nodes.values())

    async def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes.values():
            node.start()
        await self.wait_for_jetstream(timeout)

    async def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Until the JetStream meta group has a leader (an account info request is answered)."""
        nc = await nats.connect(self.url.split(","))
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    reply = json.loads((await nc.request("$JS.API.INFO", b"", timeout=1)).data)
                    if "error" not in reply:
                        return
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the NATS cluster had no JetStream leader within {timeout} s")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def wait_for_leaders(self, streams: list[str], consumers: list[tuple[str, str]], timeout: float = 60.0) -> dict[str, str | None]:
        """Until every stream and consumer has a leader among the servers still running."""
        running = {n for n, node in self.nodes.items() if node.process is not None and node.process.poll() is None}
        live = [f"nats://127.0.0.1:{self.nodes[n].port}" for n in sorted(running)]
        nc = await nats.connect(live)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    found = await leaders(nc, streams, consumers)
                    if all(leader in running for leader in found.values()):
                        return found
                except Exception:
                    found = {}
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no leaders among {sorted(running)} within {timeout} s: {found}")
                await asyncio.sleep(0.25)
        finally:
            await nc.close()

    def connections(self, node: str) -> list[str]:
        """Names of the client connections on `node` (nats-server's monitoring /connz)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor[node]}/connz?limit=1024", timeout=5) as reply:
            return [c.get("name", "") for c in json.loads(reply.read()).get("connections", [])]

    def kill(self, node: str) -> None:
        self.nodes[node].kill()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


async def leaders(nc: nats.NATS, streams: list[str], consumers: list[tuple[str, str]]) -> dict[str, str | None]:
    """Which server leads each stream and each (stream, durable) consumer, from the JetStream API."""
    found: dict[str, str | None] = {}
    for stream in streams:
        reply = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
        found[stream] = reply.get("cluster", {}).get("leader")
    for stream, durable in consumers:
        reply = json.loads((await nc.request(f"$JS.API.CONSUMER.INFO.{stream}.{durable}", b"", timeout=5)).data)
        found[f"{stream}/{durable}"] = reply.get("cluster", {}).get("leader")
    return found


async def move_leader(nc: nats.NATS, stream: str, away_from: str, timeout: float = 30.0) -> str:
    """Ask `stream`'s leader to step down until a server other than `away_from` leads it."""
    deadline = time.monotonic() + timeout
    while True:
        leader = (await leaders(nc, [stream], []))[stream]
        if leader is not None and leader != away_from:
            return leader
        if time.monotonic() > deadline:
            raise RuntimeError(f"{stream} is still led by {leader} after {timeout} s")
        if leader == away_from:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(0.5)
