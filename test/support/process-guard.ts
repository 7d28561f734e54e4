import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';

// What makes a process started by the tests or the benchmarks leave nothing behind: a last-resort
// kill of every tracked child and removal of every tracked temp dir when this process exits (or
// gets SIGINT, SIGTERM, SIGHUP), and `--pdeathsig` for the kernel to kill a child when this
// process dies in a way no hook sees. The brokers (./brokers.ts) and the bench's systems
// (bench/systems/process.ts) both rely on it.

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let hooksInstalled = false;

/** Kills every child still alive and removes temp dirs; runs on exit and on SIGINT/SIGTERM/SIGHUP. */
function killEverything(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', killEverything);
  // A signal skips 'exit': clean up, then let the signal do what it would have done without us.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killEverything();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

/** Registers a child so the exit hooks kill it too; it is forgotten once it exits. */
export function trackChild(child: ChildProcess): void {
  installExitHooks();
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Registers a temp dir to delete when this process exits (or earlier, with `removeTempDir`). */
export function trackTempDir(dir: string): void {
  installExitHooks();
  tempDirs.add(dir);
}

/** Deletes a temp dir now. */
export function removeTempDir(dir: string): void {
  tempDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The command line that runs `command` so that it gets SIGKILL when this process dies, even in a
 * way no exit hook sees (SIGKILL, the OOM killer): `setpriv --pdeathsig SIGKILL -- command ...`
 * where util-linux's setpriv is at hand (Linux), else the command unchanged. setpriv execs the
 * command, so the spawned pid stays the child's own (its RSS and CPU are what the bench samples).
 */
export function withParentDeathSignal(command: string, args: readonly string[]): [string, string[]] {
  const guard = setprivPath();
  return guard ? [guard, ['--pdeathsig', 'SIGKILL', '--', command, ...args]] : [command, [...args]];
}

let setpriv: string | null | undefined;

/** util-linux `setpriv` (for `--pdeathsig`), or undefined where there is none (not Linux). */
function setprivPath(): string | undefined {
  if (setpriv === undefined) setpriv = process.platform === 'linux' ? (findOnPath('setpriv') ?? null) : null;
  return setpriv ?? undefined;
}

/** The path of an executable on PATH (or in the sbin directories), or undefined. */
export function findOnPath(binary: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/usr/local/sbin', '/sbin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
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
