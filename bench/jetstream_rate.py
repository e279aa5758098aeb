"""How many messages a second JetStream stores on this machine, with every write synced to disk
(`sync_interval: always`, as Timestep's embedded server runs) and with nats-server's default.

    python bench/jetstream_rate.py [--messages 5000]

Publishes --messages messages of 120 bytes to one file-backed stream without waiting for each
acknowledgement (as Timestep's event sink does), then waits for them all; prints messages a
second for each setting. It bounds how many events a second runs can have stored.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from timestep.bus.server import free_port, server_binary  # noqa: E402


async def rate(messages: int, synced: bool) -> float:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async def quiet(exc: Exception) -> None:  # refused while the server starts: tried again below
        pass

    with tempfile.TemporaryDirectory(prefix="timestep-jsrate-") as tmp:
        port = free_port()
        conf = Path(tmp) / "server.conf"
        conf.write_text(f"listen: '127.0.0.1:{port}'\njetstream {{\n  store_dir: '{tmp}/js'\n"
                        f"  {'sync_interval: always' if synced else ''}\n}}\n")
        server = subprocess.Popen([server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    nc = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=0, error_cb=quiet)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="RATE", subjects=["rate.>"], storage=StorageType.FILE))
            began = time.perf_counter()
            acks = [await js.publish_async(f"rate.{i % 100}", b"x" * 120, headers={"Nats-Msg-Id": str(i)}) for i in range(messages)]
            await asyncio.gather(*acks)
            seconds = time.perf_counter() - began
            await nc.close()
            return messages / seconds
        finally:
            server.terminate()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    for synced in (True, False):
        per_second = asyncio.run(rate(args.messages, synced))
        print(f"{'sync_interval: always' if synced else 'default sync'}: {per_second:,.0f} messages/s stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
