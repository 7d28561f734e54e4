import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trackChild, withParentDeathSignal } from '../../test/support/process-guard.js';

// OS processes of the systems under test: spawning with a ready check and a start timeout that
// reports the child's stderr, bounded stops, and (through test/support/process-guard.ts, shared
// with the brokers) a last-resort kill of every child when the bench process exits, so an
// interrupted run leaves no servers, workers or brokers behind.

/** The repository root, whether this module runs from `dist/` or from the sources (tests). */
const ROOT = fileURLToPath(
  new URL(import.meta.url.includes('/dist/') ? '../../../' : '../../', import.meta.url),
);

/** A compiled file, by its path in the repository (e.g. `services/cli/main.js`); `npm run build` puts it there. */
export function builtFile(path: string): string {
  return join(ROOT, 'dist', path);
}

/** The built CLI. */
export const CLI = builtFile('services/cli/main.js');

/**
 * Node flags for every server process a system starts. With `MCP_CLUSTER_BENCH_CPU_PROF=<dir>` each
 * writes a V8 CPU profile there when it exits (open it in Chrome DevTools or speedscope), which is
 * how the hot path of the cluster's processes is profiled under a scenario's load.
 */
export function serverNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dir = env.MCP_CLUSTER_BENCH_CPU_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/** A child process started by a system, ready to serve. */
export interface ChildRole<T> {
  readonly name: string;
  readonly pid: number;
  /** What the ready check returned (the JSON ready line, the parsed URL). */
  readonly ready: T;
  /** The last 8 KiB the child wrote on stderr. */
  stderr(): string;
  /** Whether the child has exited. */
  readonly exited: boolean;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once the child is gone, at most `graceMs` + 2 s later. */
  stop(graceMs?: number): Promise<void>;
}

/** How to start one child. */
export interface SpawnOptions<T> {
  /** Label in error messages, e.g. `cluster-nats ingress 1`. */
  name: string;
  command: string;
  args: string[];
  /** Environment of the child: the bench's own, without `MCP_CLUSTER_*`, plus these. */
  env?: Record<string, string>;
  /**
   * Looks at everything the child printed on stdout so far; returns a value once it is ready.
   * Absent: the child counts as started once it was spawned (the caller probes it itself).
   */
  ready?: (stdout: string) => T | undefined;
  /** Start timeout in milliseconds. Default 30 s. */
  timeoutMs?: number;
  /** Keep stdin open as a pipe (the bench's own servers exit when it closes). Default false. */
  stdinPipe?: boolean;
}

const STDERR_KEEP = 8192;
const DEFAULT_START_TIMEOUT_MS = 30_000;
const DEFAULT_GRACE_MS = 5_000;

/** The environment children get: the bench's, without settings that would override their config. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('MCP_CLUSTER_') && !key.startsWith('FASTMCP_')) env[key] = value;
  }
  return { ...env, MCP_CLUSTER_LOG_LEVEL: 'warn', ...extra };
}

/** Spawns a child and resolves once `ready` accepts its stdout; rejects with its stderr otherwise. */
export function spawnRole<T>(options: SpawnOptions<T>): Promise<ChildRole<T>> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const [command, args] = withParentDeathSignal(options.command, options.args);
  const child = spawn(command, args, {
    env: childEnv(options.env),
    stdio: [options.stdinPipe ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-STDERR_KEEP);
  });
  let exited = false;
  const gone = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  // A stdin the child stopped reading must not crash the bench.
  child.stdin?.on('error', () => undefined);

  const stop = async (graceMs = DEFAULT_GRACE_MS): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
    // SIGKILL cannot be refused; the extra bound only guards against a zombie we never hear of.
    await Promise.race([gone, sleep(graceMs + 2000)]);
    clearTimeout(force);
  };

  return new Promise<ChildRole<T>>((resolve, reject) => {
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      const out = stdout.trim() ? `\nstdout:\n${stdout.slice(-2000)}` : '';
      reject(new Error(`${options.name} ${why}; stderr:\n${stderr.trim() || '(empty)'}${out}`));
    };
    const timer = setTimeout(() => fail(`was not ready within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (err) => fail(`could not be started (${options.command}: ${err.message})`));
    child.once('exit', (code, signal) => fail(`exited with ${signal ?? `code ${code}`} before it was ready`));
    const succeed = (value: T) => {
      settled = true;
      clearTimeout(timer);
      // Keep draining stdout so a chatty child never blocks on a full pipe.
      child.stdout?.removeAllListeners('data');
      child.stdout?.resume();
      resolve({
        name: options.name,
        pid: child.pid ?? -1,
        ready: value,
        stderr: () => stderr,
        get exited() {
          return exited;
        },
        stop,
      });
    };
    const ready = options.ready;
    if (!ready) {
      child.once('spawn', () => {
        if (!settled) succeed(undefined as T);
      });
      return;
    }
    child.stdout?.on('data', (d: Buffer) => {
      if (settled) return;
      stdout += d.toString('utf8');
      let value: T | undefined;
      try {
        value = ready(stdout);
      } catch (err) {
        fail(`printed an unexpected ready line (${(err as Error).message})`);
        return;
      }
      if (value !== undefined) succeed(value);
    });
  });
}

/** A ready check for children that print one JSON object on a line of its own. */
export function jsonLine(stdout: string): Record<string, unknown> | undefined {
  const lines = stdout.split('\n');
  lines.pop(); // not a whole line yet
  const line = lines.map((l) => l.trim()).find((l) => l.startsWith('{'));
  return line === undefined ? undefined : (JSON.parse(line) as Record<string, unknown>);
}

/** Polls `probe` every 50 ms until it is true; rejects naming `what` after `timeoutMs`. */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  details: () => string = () => '',
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      if (await probe()) return;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > until) {
      const extra = details();
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${last})` : ''}${extra ? `\n${extra}` : ''}`,
      );
    }
    await sleep(50);
  }
}

/** Whether `url` answers 200 (a `/readyz`). */
export async function answersOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.body?.cancel();
  return res.ok;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
