import { mkdtempSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type ChildRole,
  findOnPath,
  freePort,
  removeTempDir,
  spawnRole,
  trackTempDir,
  waitUntil,
} from './process.js';

// Brokers of the distributed cluster systems: nats-server with JetStream or redis-server without
// persistence, on a free port with a temp data directory, as OS processes whose pid is sampled
// like the rest of the system (test/support/brokers.ts does the same for the tests but hides pids).

/** A broker process. */
export interface BrokerProcess {
  /** `nats://127.0.0.1:<port>` or `redis://127.0.0.1:<port>`. */
  readonly url: string;
  readonly pid: number;
  stop(): Promise<void>;
}

const INSTALL_HINT = 'install it with `apt-get install nats-server redis-server`';

/** Starts `nats-server -js` (or `redis-server`) and resolves once it answers its protocol. */
export async function startBrokerProcess(kind: 'nats' | 'redis', timeoutMs = 15_000): Promise<BrokerProcess> {
  const binary = kind === 'nats' ? 'nats-server' : 'redis-server';
  const path = findOnPath(binary);
  if (!path) throw new Error(`${binary} was not found on PATH; ${INSTALL_HINT}`);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `mcp-cluster-bench-${kind}-`));
  trackTempDir(dir);
  const args =
    kind === 'nats'
      ? ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir]
      : ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const probe = kind === 'nats' ? { send: '', expect: 'INFO ' } : { send: 'PING\r\n', expect: '+PONG' };
  let child: ChildRole<undefined>;
  try {
    // Readiness is probed on the port, not read from stdout: both log banners, neither a ready line.
    child = await spawnRole<undefined>({ name: binary, command: path, args, timeoutMs });
  } catch (err) {
    removeTempDir(dir);
    throw err;
  }
  const started = child;
  try {
    await waitUntil(
      `${binary} to accept connections on port ${port}`,
      async () => {
        if (started.exited) throw new Error(`${binary} exited: ${started.stderr()}`);
        return probeOnce(port, probe);
      },
      timeoutMs,
      () => `stderr:\n${started.stderr()}`,
    );
  } catch (err) {
    await started.stop(1000);
    removeTempDir(dir);
    throw err;
  }
  return {
    url: `${kind}://127.0.0.1:${port}`,
    pid: started.pid,
    async stop() {
      await started.stop(3000);
      removeTempDir(dir);
    },
  };
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
