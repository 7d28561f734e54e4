import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  findOnPath,
  freePort,
  removeTempDir,
  trackChild,
  trackTempDir,
  withParentDeathSignal,
} from './process-guard.js';

// Brokers spawned for the tests and the benchmarks: `nats-server` with JetStream, or `redis-server`
// without persistence, each on 127.0.0.1, a free port and a fresh temp data directory, handed back
// only once it answers its protocol.
//
// This is the one implementation: the benchmarks import it from here (bench/ may use test support,
// the tests never import bench/). A broker leaves nothing behind: it runs under
// `setpriv --pdeathsig SIGKILL` where available (the kernel kills it when the test or bench process
// dies, even by SIGKILL), the exit hooks of ./process-guard.ts kill it on exit, SIGINT, SIGTERM and
// SIGHUP, and its data directory goes with `dispose()` or with those hooks.

export { freePort } from './process-guard.js';

/** A broker process listening on 127.0.0.1. */
export interface SpawnedBroker {
  /** URL to hand to `openBroker` or a cluster config, e.g. `nats://127.0.0.1:40123`. */
  readonly url: string;
  /** Process id of the running broker (what the bench samples RSS and CPU of); new after `restart()`, -1 while stopped. */
  readonly pid: number;
  /** Stops the process (SIGTERM, then SIGKILL after 5 s). Its data directory stays for `restart()`. */
  stop(): Promise<void>;
  /** Stops the process if it runs and starts it again on the same port with the same data directory. */
  restart(): Promise<void>;
  /** Stops the process and deletes its data directory; the broker cannot be restarted afterwards. */
  dispose(): Promise<void>;
}

/** Settings of a broker start. */
export interface BrokerStartOptions {
  /** How long the broker may take to accept connections, in milliseconds. Default 10 s. */
  readyTimeoutMs?: number;
  /**
   * Redis only: keep data across `restart()` (append-only file, fsync on every write), as a
   * production Redis behind durable jobs runs. Default false. NATS always keeps its store.
   */
  persistent?: boolean;
}

const DEFAULT_READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_KEEP = 4000;
const INSTALL_HINT = 'install the brokers with `apt-get install nats-server redis-server`';

/** Spawns `nats-server` (kind `nats`) or `redis-server` (kind `redis`); see the two functions below. */
export function startBrokerServer(
  kind: 'nats' | 'redis',
  options: BrokerStartOptions = {},
): Promise<SpawnedBroker> {
  return kind === 'nats' ? startNatsServer(options) : startRedisServer(options);
}

/** Spawns `nats-server` with JetStream on a free port and a fresh store directory. */
export async function startNatsServer(options: BrokerStartOptions = {}): Promise<SpawnedBroker> {
  const port = await freePort();
  return startBroker(
    {
      binary: 'nats-server',
      dataDirPrefix: 'mcp-cluster-nats-',
      args: (dir) => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir],
      port,
      url: `nats://127.0.0.1:${port}`,
      // The server greets every client with INFO; JetStream is up before the listener opens.
      probe: { send: '', expect: 'INFO ' },
    },
    options,
  );
}

/**
 * Spawns `redis-server` on a free port, without persistence (a restart starts empty) unless
 * `options.persistent`.
 */
export async function startRedisServer(options: BrokerStartOptions = {}): Promise<SpawnedBroker> {
  const port = await freePort();
  return startBroker(
    {
      binary: 'redis-server',
      dataDirPrefix: 'mcp-cluster-redis-',
      args: (dir) => [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        options.persistent ? 'yes' : 'no',
        '--appendfsync',
        'always',
        '--dir',
        dir,
      ],
      port,
      url: `redis://127.0.0.1:${port}`,
      probe: { send: 'PING\r\n', expect: '+PONG' },
    },
    options,
  );
}

/**
 * A namespace unique to one test, valid as a NATS stream-name prefix and a Redis key prefix
 * (letters, digits and underscores only).
 */
export function uniqueNamespace(prefix: string): string {
  const clean = prefix.replace(/[^A-Za-z0-9_]/g, '_');
  return `${clean}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

interface BrokerSpec {
  binary: string;
  dataDirPrefix: string;
  args: (dataDir: string) => string[];
  port: number;
  url: string;
  /** A line to write after connecting (may be empty) and the reply prefix that proves readiness. */
  probe: { send: string; expect: string };
}

async function startBroker(spec: BrokerSpec, options: BrokerStartOptions): Promise<SpawnedBroker> {
  const binaryPath = findOnPath(spec.binary);
  if (!binaryPath) throw new Error(`${spec.binary} was not found on PATH; ${INSTALL_HINT}`);
  const readyTimeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const dir = mkdtempSync(join(tmpdir(), spec.dataDirPrefix));
  trackTempDir(dir);
  const args = spec.args(dir);

  let child: ChildProcess | undefined;
  let disposed = false;
  const start = async () => {
    if (disposed) throw new Error(`${spec.binary} on port ${spec.port} was disposed and cannot be restarted`);
    child = await spawnReady(binaryPath, args, spec, readyTimeoutMs);
  };
  const stop = async () => {
    const running = child;
    child = undefined;
    if (running) await killChild(running);
  };
  try {
    await start();
  } catch (err) {
    removeTempDir(dir);
    throw err;
  }
  return {
    url: spec.url,
    get pid() {
      return child?.pid ?? -1;
    },
    stop,
    restart: async () => {
      await stop();
      await start();
    },
    dispose: async () => {
      disposed = true;
      await stop();
      removeTempDir(dir);
    },
  };
}

async function spawnReady(
  binaryPath: string,
  args: string[],
  spec: BrokerSpec,
  readyTimeoutMs: number,
): Promise<ChildProcess> {
  const [command, guardedArgs] = withParentDeathSignal(binaryPath, args);
  const child = spawn(command, guardedArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  // Keep the tail of the output for error messages (redis-server logs on stdout, nats-server on
  // stderr); never let a full pipe block the broker.
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_KEEP);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? `code ${code}`}`;
  });
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err) =>
      reject(new Error(`could not start ${spec.binary}: ${err.message}; ${INSTALL_HINT}`)),
    );
  });
  spawnError.catch(() => undefined);

  const deadline = Date.now() + readyTimeoutMs;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${spec.binary} ${exited} before accepting connections:\n${output}`);
    const ready = await Promise.race([probeOnce(spec.port, spec.probe), spawnError]);
    if (ready) return child;
    await sleep(50);
  }
  await killChild(child);
  throw new Error(
    `${spec.binary} did not accept connections on port ${spec.port} within ${readyTimeoutMs} ms:\n${output}`,
  );
}

/** Connects once and resolves whether the server answered like a ready broker. */
function probeOnce(port: number, probe: { send: string; expect: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let received = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => {
      if (probe.send) socket.write(probe.send);
    });
    socket.on('data', (chunk) => {
      received += chunk.toString('utf8');
      if (received.startsWith(probe.expect)) finish(true);
      else if (received.length >= probe.expect.length) finish(false);
    });
  });
}

/** SIGTERM, SIGKILL after 5 s; resolves once the process is gone. */
async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
