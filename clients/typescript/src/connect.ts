/** Connection settings: explicit options first, then the same NATS_* variables as the Python side. */

import { readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  connect as natsConnect,
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { TimestepError, ValidationError } from "./errors.js";

export interface TlsFiles {
  /** NATS_TLS_CA_FILE: the CA that signed the server's certificate. */
  caFile?: string;
  /** NATS_TLS_CERT_FILE: a client certificate (optional). */
  certFile?: string;
  /** NATS_TLS_KEY_FILE: its key. */
  keyFile?: string;
}

export interface ConnectOptions {
  /** NATS server URL(s); else NATS_URL (comma-separated), else the URL `timestep up` wrote to $TIMESTEP_HOME/nats.url. */
  servers?: string | string[];
  /** NATS_USER and NATS_PASSWORD. */
  user?: string;
  password?: string;
  /** NATS_TOKEN. */
  token?: string;
  /** NATS_NKEY_SEED_FILE: path of an nkey seed file. */
  nkeySeedFile?: string;
  /** NATS_CREDS_FILE: path of a .creds file (JWT and seed). */
  credsFile?: string;
  /** NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE. */
  tls?: TlsFiles;
  /** TIMESTEP_SUBJECT_PREFIX: the first token(s) of every subject (default `timestep`). */
  prefix?: string;
  /** NATS_CONNECT_TIMEOUT: seconds the first connection may take (default 10). */
  connectTimeoutSeconds?: number;
  /** The connection's name, as the server shows it. */
  name?: string;
  /** Where the NATS_* and TIMESTEP_* variables are read (default `process.env`). */
  env?: Record<string, string | undefined>;
}

export interface ResolvedSettings {
  servers: string[];
  prefix: string;
  connectTimeoutSeconds: number;
  options: NodeConnectionOptions;
  /** The nats.url the servers were read from: read again while reconnecting. */
  urlFile?: string;
}

function variable(env: Record<string, string | undefined>, key: string): string | undefined {
  return env[key] || undefined;
}

function readFile(field: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ValidationError(field, `cannot read ${path} (${(error as Error).message})`, "give the path of an existing file");
  }
}

function urlFile(env: Record<string, string | undefined>): string {
  return join(resolve(variable(env, "TIMESTEP_HOME") ?? ".timestep"), "nats.url");
}

function splitServers(urls: string): string[] {
  return urls.split(",").map((s) => s.trim()).filter(Boolean);
}

/** NATS_URL, else the URL `timestep up` wrote to $TIMESTEP_HOME/nats.url (as `resolve_url` in timestep/client.py). */
export function resolveServers(env: Record<string, string | undefined>): string[] {
  const url = variable(env, "NATS_URL");
  if (url) return splitServers(url);
  const path = urlFile(env);
  if (existsSync(path)) return splitServers(readFileSync(path, "utf8"));
  throw new TimestepError(`no NATS server: pass servers, set NATS_URL, or start one with \`timestep up\` (it writes ${path})`);
}

export function resolveSettings(options: ConnectOptions = {}): ResolvedSettings {
  const env = options.env ?? process.env;
  const servers = options.servers === undefined ? resolveServers(env) : [options.servers].flat();
  const fromFile = options.servers === undefined && !variable(env, "NATS_URL") ? urlFile(env) : undefined;
  if (servers.length === 0) throw new ValidationError("servers", "is empty", "give at least one NATS URL");

  const prefix = options.prefix ?? variable(env, "TIMESTEP_SUBJECT_PREFIX") ?? "timestep";
  if (!prefix.split(".").every((token) => /^[A-Za-z0-9_-]+$/.test(token))) {
    throw new ValidationError("prefix", `'${prefix}' is not a subject prefix`, "use dot-separated tokens of letters, digits, '_' and '-'");
  }

  const rawTimeout = options.connectTimeoutSeconds ?? variable(env, "NATS_CONNECT_TIMEOUT") ?? 10;
  const connectTimeoutSeconds = Number(rawTimeout);
  if (!Number.isFinite(connectTimeoutSeconds) || connectTimeoutSeconds <= 0) {
    const field = options.connectTimeoutSeconds === undefined ? "NATS_CONNECT_TIMEOUT" : "connectTimeoutSeconds";
    throw new ValidationError(field, `'${rawTimeout}' is not a number of seconds greater than 0`, "set it like 10");
  }

  const nats: NodeConnectionOptions = {
    servers,
    name: options.name ?? "timestep-client-ts",
    // Reconnect forever once connected; the first connection has its deadline (below).
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: Math.min(5, connectTimeoutSeconds) * 1000,
  };
  const user = options.user ?? variable(env, "NATS_USER");
  if (user) {
    nats.user = user;
    nats.pass = options.password ?? variable(env, "NATS_PASSWORD") ?? "";
  }
  const token = options.token ?? variable(env, "NATS_TOKEN");
  if (token) nats.token = token;

  const authenticators: Authenticator[] = [];
  const nkeySeedFile = options.nkeySeedFile ?? variable(env, "NATS_NKEY_SEED_FILE");
  if (nkeySeedFile) {
    const seed = new TextDecoder().decode(readFile("nkeySeedFile", nkeySeedFile)).trim();
    authenticators.push(nkeyAuthenticator(new TextEncoder().encode(seed)));
  }
  const credsFile = options.credsFile ?? variable(env, "NATS_CREDS_FILE");
  if (credsFile) authenticators.push(credsAuthenticator(readFile("credsFile", credsFile)));
  if (authenticators.length) nats.authenticator = authenticators;

  const tls: TlsFiles = {
    caFile: options.tls?.caFile ?? variable(env, "NATS_TLS_CA_FILE"),
    certFile: options.tls?.certFile ?? variable(env, "NATS_TLS_CERT_FILE"),
    keyFile: options.tls?.keyFile ?? variable(env, "NATS_TLS_KEY_FILE"),
  };
  if (tls.caFile || tls.certFile) {
    if (tls.certFile && !tls.keyFile) throw new ValidationError("tls.keyFile", "is missing", "give the key of the client certificate");
    nats.tls = Object.fromEntries(Object.entries(tls).filter(([, v]) => v)) as TlsFiles;
  }
  return { servers, prefix, connectTimeoutSeconds, options: nats, urlFile: fromFile };
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/**
 * Options that, before each reconnect attempt, read `path` again and move the connection to
 * the URL found there: a restarted `timestep up` that had to take another port wrote it there.
 */
function following(path: string, servers: string[], options: NodeConnectionOptions, connection: () => NatsConnection | undefined): NodeConnectionOptions {
  let followed = servers.join(",");
  const wait = options.reconnectTimeWait ?? 250;
  return {
    ...options,
    // The client calls this before it picks the server of each attempt.
    reconnectDelayHandler: () => {
      const nc = connection();
      if (nc === undefined || nc.isClosed()) return wait;
      let named: string;
      try {
        named = readFileSync(path, "utf8").trim();
      } catch {
        return wait; // not written yet: the server is still starting
      }
      if (named && named !== followed) {
        replaceServers(nc, splitServers(named));
        followed = named;
      }
      return wait;
    },
  };
}

/** Reconnect to `urls` from now on. @nats-io/nats-core 3.3 (the release whose dependencies run on
 * Node 20) has no `setServers`: there the pool the client picks each attempt's server from is replaced. */
function replaceServers(nc: NatsConnection, urls: string[]): void {
  const withSetServers = nc as NatsConnection & { setServers?: (servers: string[]) => void };
  if (typeof withSetServers.setServers === "function") {
    withSetServers.setServers(urls);
    return;
  }
  const pool = (nc as unknown as { protocol?: { servers?: { clear(): void; addServer(url: string): void } } }).protocol?.servers;
  if (pool === undefined) return;
  pool.clear();
  for (const url of urls) pool.addServer(url);
}

/** Connect with a deadline; a failure says where, why, and what to check. */
export async function openConnection(settings: ResolvedSettings): Promise<NatsConnection> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), settings.connectTimeoutSeconds * 1000);
  });
  let connected: NatsConnection | undefined;
  const options = settings.urlFile === undefined ? settings.options : following(settings.urlFile, settings.servers, settings.options, () => connected);
  const attempt = natsConnect(options);
  try {
    connected = await Promise.race([attempt, deadline]);
    return connected;
  } catch (error) {
    attempt.then((nc) => nc.close()).catch(() => undefined);
    const cause = error as Error;
    throw new TimestepError(
      `could not connect to NATS at ${settings.servers.map(redact).join(",")} within ${settings.connectTimeoutSeconds} s ` +
        `(${cause.name}: ${cause.message}); check NATS_URL and the NATS_* credentials`,
    );
  } finally {
    clearTimeout(timer);
  }
}
