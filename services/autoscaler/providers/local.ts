import { type ChildProcess, spawn } from 'node:child_process';
import { ClusterError, createLogger, type Logger, toClusterError } from '../../core/index.js';
import type { ScalingProvider } from '../provider.js';

/** One worker replica the local provider started: a worker process, or a worker inside this process. */
export interface LocalReplica {
  /** Name in logs and `/status`, e.g. `inference#3 (pid 4242)`. */
  readonly id: string;
  /** OS process id of a worker process; undefined for a worker inside this process. */
  readonly pid: number | undefined;
  /**
   * `/metrics` of the replica's worker process, read for its completions and service times; undefined
   * for a worker inside this process (its figures are on this process's own registry).
   */
  readonly metricsUrl: string | undefined;
  /** Settles once the replica has stopped: drained by `drain()`, or exited on its own (a crash). */
  readonly exited: Promise<void>;
  /**
   * Drains the replica: it stops taking calls and finishes or hands back the ones it holds within the
   * worker's drain grace (`worker.drainGrace`), then stops. Resolves once it has stopped; idempotent.
   */
  drain(): Promise<void>;
}

/**
 * Starts one replica of `pool` and resolves once it takes calls. Rejects with a ClusterError that says
 * why it could not start.
 */
export type ReplicaLauncher = (pool: string) => Promise<LocalReplica>;

/** A replica as `LocalProvider.list()` shows it. */
export interface LocalReplicaView {
  readonly pool: string;
  readonly id: string;
  readonly pid: number | undefined;
  readonly state: 'running' | 'draining';
}

/** The `local` provider, with what the CLI and the service need beyond the contract. */
export interface LocalProvider extends ScalingProvider {
  readonly kind: 'local';
  /** `/metrics` URLs of the running worker processes, for the rate source to scrape. */
  metricsUrls(): string[];
  /** Running and draining replicas, oldest first. */
  list(): LocalReplicaView[];
}

/** Options of {@link localProvider}. */
export interface LocalProviderOptions {
  /** Starts one replica: {@link workerProcessLauncher}, or an in-process launcher (`mcp-cluster up`). */
  launch: ReplicaLauncher;
  log?: Logger;
  /**
   * After a failed launch, the pool's next launch waits this long, doubling with each failure in a row
   * up to 32 times it (a worker that cannot start is not respawned on every interval), ms. Default 1000.
   */
  retryBackoffMs?: number;
}

interface PoolReplicas {
  /** Running replicas, oldest first. */
  live: LocalReplica[];
  /** Launches under way; they count as replicas (the contract's "including replicas still starting"). */
  starting: number;
  /** Scale operations of this pool run one after the other. */
  queue: Promise<unknown>;
  /** Failed launches in a row, and the earliest time (performance.now) the next launch may start. */
  failures: number;
  retryAtMs: number;
  lastFailure: ClusterError | undefined;
}

/**
 * The `local` provider: worker replicas on this machine. Scaling up launches replicas and resolves once
 * they take calls (it rejects, keeping the ones that did start, when a launch fails; the service retries
 * on its next interval). Scaling down takes the newest replicas out of the count at once and drains them
 * in the background, so a draining replica is never counted as current and a returning load is met by
 * new replicas without waiting for the drain. A replica that exits on its own (a crash) leaves the
 * count, so the next decision replaces it. After a failed launch the pool's launches back off
 * (`retryBackoffMs`, doubling), so a worker that cannot start is not respawned on every interval.
 * `close()` drains every replica.
 */
export function localProvider(options: LocalProviderOptions): LocalProvider {
  const log = options.log ?? createLogger('autoscaler', { provider: 'local' });
  const backoffMs = options.retryBackoffMs ?? 1000;
  const pools = new Map<string, PoolReplicas>();
  const draining = new Map<LocalReplica, { pool: string; done: Promise<void> }>();
  let closed = false;
  let closing: Promise<void> | undefined;

  const poolOf = (pool: string): PoolReplicas => {
    let p = pools.get(pool);
    if (!p) {
      p = {
        live: [],
        starting: 0,
        queue: Promise.resolve(),
        failures: 0,
        retryAtMs: 0,
        lastFailure: undefined,
      };
      pools.set(pool, p);
    }
    return p;
  };

  const drain = (pool: string, replica: LocalReplica) => {
    if (draining.has(replica)) return;
    const done = replica
      .drain()
      .catch((err: unknown) => log.warn('draining a replica failed', { pool, replica: replica.id, err }));
    draining.set(replica, { pool, done });
    void done.finally(() => draining.delete(replica));
  };

  const adopt = (pool: string, p: PoolReplicas, replica: LocalReplica) => {
    if (closed) {
      drain(pool, replica);
      return;
    }
    p.live.push(replica);
    void replica.exited.then(() => {
      const at = p.live.indexOf(replica);
      if (at === -1) return;
      p.live.splice(at, 1);
      log.warn('replica exited on its own; the next decision replaces it', { pool, replica: replica.id });
    });
  };

  const scaleNow = async (pool: string, replicas: number) => {
    const p = poolOf(pool);
    const current = p.live.length + p.starting;
    if (replicas < current) {
      // Newest first: the oldest replicas have the warmest caches and the longest-running calls.
      for (const replica of p.live.splice(replicas).reverse()) {
        log.info('draining replica', { pool, replica: replica.id });
        drain(pool, replica);
      }
      return;
    }
    const more = replicas - current;
    if (more === 0) return;
    const waitMs = p.retryAtMs - performance.now();
    if (p.lastFailure && waitMs > 0) {
      throw new ClusterError(
        p.lastFailure.code,
        `not starting replicas of pool ${pool} for another ${Math.ceil(waitMs)} ms after ${p.failures} failed start(s); the last: ${p.lastFailure.message}`,
        { cause: p.lastFailure },
      );
    }
    p.starting += more;
    const results = await Promise.allSettled(
      Array.from({ length: more }, async () => {
        try {
          const replica = await options.launch(pool);
          adopt(pool, p, replica);
          log.info('replica started', { pool, replica: replica.id });
        } finally {
          p.starting--;
        }
      }),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length === 0) {
      p.failures = 0;
      p.lastFailure = undefined;
    } else {
      const first = toClusterError(failed[0]?.reason);
      p.failures++;
      p.lastFailure = first;
      p.retryAtMs = performance.now() + backoffMs * 2 ** Math.min(p.failures - 1, 5);
      throw new ClusterError(
        first.code,
        `could not start ${failed.length} of ${more} replicas of pool ${pool}: ${first.message}`,
        { cause: first },
      );
    }
  };

  return {
    kind: 'local',
    replicas: async (pool) => {
      const p = pools.get(pool);
      return p ? p.live.length + p.starting : 0;
    },
    scale: (pool, replicas) => {
      if (!Number.isInteger(replicas) || replicas < 0) {
        return Promise.reject(
          new ClusterError('INTERNAL', `replicas must be a non-negative integer, got ${replicas}`),
        );
      }
      if (closed) {
        return Promise.reject(new ClusterError('SHUTTING_DOWN', 'the local provider is closed'));
      }
      const p = poolOf(pool);
      const next = p.queue.then(() => scaleNow(pool, replicas));
      p.queue = next.catch(() => undefined);
      return next;
    },
    metricsUrls: () =>
      [...pools.values()].flatMap((p) =>
        p.live.map((r) => r.metricsUrl).filter((u): u is string => u !== undefined),
      ),
    list: () => [
      ...[...pools.entries()].flatMap(([pool, p]) =>
        p.live.map((r) => ({ pool, id: r.id, pid: r.pid, state: 'running' as const })),
      ),
      ...[...draining.entries()].map(([r, d]) => ({
        pool: d.pool,
        id: r.id,
        pid: r.pid,
        state: 'draining' as const,
      })),
    ],
    close: () => {
      closed = true;
      closing ??= (async () => {
        // Launches under way end first (adopt() drains what they start once closing).
        await Promise.allSettled([...pools.values()].map((p) => p.queue));
        for (const [pool, p] of pools) for (const replica of p.live.splice(0).reverse()) drain(pool, replica);
        await Promise.allSettled([...draining.values()].map((d) => d.done));
      })();
      return closing;
    },
  };
}

/** Options of {@link workerProcessLauncher}. */
export interface WorkerProcessOptions {
  /** The mcp-cluster CLI script, run with this Node binary (`dist/services/cli/main.js`). */
  cliPath: string;
  /**
   * Arguments each worker gets after `worker --pool P --port 0`: the autoscaler passes its own
   * `--config FILE` and `--broker URL`, so its workers read the same configuration and queue.
   */
  args: readonly string[];
  /** Environment of the workers. Default this process's. */
  env?: NodeJS.ProcessEnv;
  /** Host in the workers' `/metrics` URLs (where `worker.host` is reachable from here). Default 127.0.0.1. */
  metricsHost?: string;
  /** How long a worker may take to print its ready line, ms. Default 30 000. */
  readyTimeoutMs?: number;
  /** A draining worker still running after this long is killed (SIGKILL), ms. Default 60 000. */
  killAfterMs?: number;
  /** Where each worker's stderr (its JSON logs) is copied. Default this process's stderr. */
  stderr?: NodeJS.WritableStream;
}

/** Worker processes alive, killed when this process exits so that none is left orphaned. */
const children = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * A launcher of worker processes: `node <cliPath> worker --pool P --port 0 <args>`, ready once it prints
 * its JSON ready line (`{"role":"worker","pool":P,"port":N}`). Draining sends SIGTERM (the worker stops
 * taking calls and finishes or hands back the ones it holds within `worker.drainGrace`), then SIGKILL
 * after `killAfterMs`. Workers run in their own process group, so only this process signals them;
 * those still alive when this process exits are killed (one killed with SIGKILL cannot do that: its
 * workers keep serving until stopped by hand).
 */
export function workerProcessLauncher(options: WorkerProcessOptions): ReplicaLauncher {
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  const killAfterMs = options.killAfterMs ?? 60_000;
  const metricsHost = options.metricsHost ?? '127.0.0.1';
  const stderrSink = options.stderr ?? process.stderr;
  let launched = 0;
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const child of children) child.kill('SIGKILL');
    });
  }

  return (pool) =>
    new Promise<LocalReplica>((resolve, reject) => {
      const n = ++launched;
      const child = spawn(
        process.execPath,
        [options.cliPath, 'worker', '--pool', pool, '--port', '0', ...options.args],
        // Its own process group: a Ctrl-C in the terminal reaches the autoscaler alone, which then drains
        // each worker with one SIGTERM (a second signal would make the worker exit without draining).
        { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
      );
      children.add(child);
      let stderrTail = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        stderrSink.write(chunk);
        stderrTail = (stderrTail + chunk.toString('utf8')).slice(-2000);
      });
      const exited = new Promise<void>((done) => {
        child.once('exit', () => {
          children.delete(child);
          done();
        });
      });
      let settled = false;
      const fail = (why: string, cause?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        // The worker's own message (`mcp-cluster: INVALID_CONFIG: ...`) is the one a person can act on.
        const own = /mcp-cluster: ([A-Z_]+): (.*)/.exec(stderrTail);
        // Else a crash's own line (`Error: Cannot find module …`): Node prints it above a stack whose
        // length depends on the release, so the last lines alone may not hold it.
        const crash = /^\w*(?:Error|Exception)(?: \[\w+\])?: .*$/m.exec(stderrTail)?.[0];
        const said = own
          ? `: ${own[1]}: ${own[2]}`
          : crash
            ? `; it failed with ${crash.slice(0, 500)}`
            : stderrTail
              ? `; its last output: ${stderrTail.trim().slice(-500)}`
              : '';
        reject(
          new ClusterError(
            own?.[1] === 'INVALID_CONFIG' ? 'INVALID_CONFIG' : 'INTERNAL',
            `worker of pool ${pool} ${why}${said}`,
            { cause },
          ),
        );
      };
      const timer = setTimeout(
        () => fail(`printed no ready line within ${readyTimeoutMs} ms`),
        readyTimeoutMs,
      );
      const onEarlyExit = (code: number | null, signal: NodeJS.Signals | null) =>
        fail(`exited (${signal ?? `code ${code}`}) before it was ready`);
      child.once('exit', onEarlyExit);
      child.once('error', (err) => fail(`could not be started (${err.message})`, err));

      let stdout = '';
      const onData = (chunk: Buffer) => {
        stdout += chunk.toString('utf8');
        if (stdout.length > 64 * 1024) {
          fail('wrote more than 64 KiB to stdout without a ready line');
          return;
        }
        let newline = stdout.indexOf('\n');
        while (newline !== -1) {
          const line = stdout.slice(0, newline).trim();
          stdout = stdout.slice(newline + 1);
          newline = stdout.indexOf('\n');
          const port = readyPort(line, pool);
          if (port === undefined) continue;
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          child.off('exit', onEarlyExit);
          child.stdout?.off('data', onData);
          // Keep reading so a worker that prints more never blocks on a full pipe.
          child.stdout?.resume();
          let draining: Promise<void> | undefined;
          resolve({
            id: `${pool}#${n} (pid ${child.pid})`,
            pid: child.pid,
            metricsUrl: `http://${metricsHost.includes(':') ? `[${metricsHost}]` : metricsHost}:${port}/metrics`,
            exited,
            drain: () => {
              draining ??= (async () => {
                if (child.exitCode !== null || child.signalCode !== null) return;
                child.kill('SIGTERM');
                const force = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
                await exited;
                clearTimeout(force);
              })();
              return draining;
            },
          });
          return;
        }
      };
      child.stdout?.on('data', onData);
    });
}

/** The port of a worker's ready line for `pool`, or undefined when `line` is not one. */
export function readyPort(line: string, pool: string): number | undefined {
  if (!line.startsWith('{')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { role, pool: readyPool, port } = parsed as Record<string, unknown>;
  if (role !== 'worker' || readyPool !== pool) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535) return undefined;
  return port;
}
