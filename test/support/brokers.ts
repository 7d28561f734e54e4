import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A broker process spawned for a test run, listening on 127.0.0.1. */
export interface SpawnedBroker {
  /** URL to hand to `openBroker`, e.g. `nats://127.0.0.1:40123`. */
  readonly url: string;
  /** Stops the process (SIGTERM, then SIGKILL after 5 s). Its data directory stays for `restart()`. */
  stop(): Promise<void>;
  /** Stops the process if it runs and starts it again on the same port with the same data directory. */
  restart(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const INSTALL_HINT = 'install the brokers with `apt-get install nats-server redis-server`';

/** Children and data directories still alive, so a crashed or interrupted run leaves nothing behind. */
const liveChildren = new Set<ChildProcess>();
const dataDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const cleanup = () => {
    for (const child of liveChildren) child.kill('SIGKILL');
    liveChildren.clear();
    for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
    dataDirs.clear();
  };
  process.once('exit', cleanup);
  // Test runners stop their workers with SIGTERM, which skips 'exit': clean up, then let the
  // signal do what it would have done without us.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      cleanup();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

/** Spawns `nats-server` with JetStream on a free port and a fresh store directory. */
export async function startNatsServer(): Promise<SpawnedBroker> {
  const port = await freePort();
  const dir = makeDataDir('nats');
  return startBroker({
    binary: 'nats-server',
    args: ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir],
    port,
    url: `nats://127.0.0.1:${port}`,
    // The server greets every client with INFO; JetStream is up before the listener opens.
    probe: { send: '', expect: 'INFO ' },
  });
}

/** Spawns `redis-server` without persistence on a free port (a restart therefore starts empty). */
export async function startRedisServer(): Promise<SpawnedBroker> {
  const port = await freePort();
  const dir = makeDataDir('redis');
  return startBroker({
    binary: 'redis-server',
    args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    port,
    url: `redis://127.0.0.1:${port}`,
    probe: { send: 'PING\r\n', expect: '+PONG' },
  });
}

/**
 * A namespace unique to one test, valid as a NATS stream-name prefix and a Redis key prefix
 * (letters, digits and underscores only).
 */
export function uniqueNamespace(prefix: string): string {
  const clean = prefix.replace(/[^A-Za-z0-9_]/g, '_');
  return `${clean}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

/** A TCP port that was free a moment ago (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('could not allocate a free port'))));
    });
  });
}

interface BrokerSpec {
  binary: string;
  args: string[];
  port: number;
  url: string;
  /** A line to write after connecting (may be empty) and the reply prefix that proves readiness. */
  probe: { send: string; expect: string };
}

async function startBroker(spec: BrokerSpec): Promise<SpawnedBroker> {
  const binaryPath = findOnPath(spec.binary);
  if (!binaryPath) throw new Error(`${spec.binary} was not found on PATH; ${INSTALL_HINT}`);
  installExitHook();

  let child: ChildProcess | undefined;
  const start = async () => {
    child = await spawnReady(binaryPath, spec);
  };
  const stop = async () => {
    const running = child;
    child = undefined;
    if (running) await killChild(running);
  };
  await start();
  return {
    url: spec.url,
    stop,
    restart: async () => {
      await stop();
      await start();
    },
  };
}

async function spawnReady(binaryPath: string, spec: BrokerSpec): Promise<ChildProcess> {
  const child = spawn(binaryPath, spec.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  // Keep the tail of the output for error messages; never let a full pipe block the broker.
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    liveChildren.delete(child);
    exited = `exited with ${signal ?? `code ${code}`}`;
  });
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err) =>
      reject(new Error(`could not start ${spec.binary}: ${err.message}; ${INSTALL_HINT}`)),
    );
  });
  spawnError.catch(() => undefined);

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${spec.binary} ${exited} before accepting connections:\n${output}`);
    const ready = await Promise.race([probeOnce(spec.port, spec.probe), spawnError]);
    if (ready) return child;
    await sleep(50);
  }
  await killChild(child);
  throw new Error(
    `${spec.binary} did not accept connections on port ${spec.port} within ${READY_TIMEOUT_MS} ms:\n${output}`,
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

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    liveChildren.delete(child);
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
  liveChildren.delete(child);
}

function makeDataDir(kind: string): string {
  const dir = mkdtempSync(join(tmpdir(), `mcp-cluster-${kind}-`));
  dataDirs.add(dir);
  return dir;
}

function findOnPath(binary: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/usr/local/sbin', '/sbin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
