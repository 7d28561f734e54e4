import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trackChild } from './process-guard.js';

/**
 * The built CLI; `npm test` builds it before running the suites. Found from the sources (the
 * suites) and from `dist/` (the conformance runner, `dist/test/conformance/run.js`) alike.
 */
export const CLI = fileURLToPath(
  new URL(
    import.meta.url.endsWith('/dist/test/support/processes.js')
      ? '../../services/cli/main.js'
      : '../../dist/services/cli/main.js',
    import.meta.url,
  ),
);

/** A cluster role running as its own OS process. */
export interface RoleProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** The JSON line the role printed on stdout once it was ready. */
  readonly ready: Record<string, unknown>;
  /** Everything it wrote to stderr so far (its JSON logs). */
  logs(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves on exit. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL at once, as a crash or a spot preemption would. */
  kill(): Promise<void>;
}

/**
 * Starts `mcp-cluster <args>` and resolves once it printed its ready line (a JSON object on
 * stdout). Rejects with its stderr when it exits first or takes longer than `timeoutMs`.
 */
export function startRole(
  name: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<RoleProcess> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, MCP_CLUSTER_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 2_000_000) stderr = stderr.slice(-1_000_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  return new Promise<RoleProcess>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} not ready within ${timeoutMs} ms; stderr:\n${stderr.slice(-4000)}`));
    }, timeoutMs);
    const onEarlyExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready; stderr:\n${stderr.slice(-4000)}`));
    };
    child.once('exit', onEarlyExit);
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const line = stdout.split('\n').find((l) => l.startsWith('{'));
      if (!line) return;
      clearTimeout(timer);
      child.off('exit', onEarlyExit);
      child.stdout?.removeAllListeners('data');
      child.stdout?.resume();
      const role: RoleProcess = {
        name,
        child,
        ready: JSON.parse(line) as Record<string, unknown>,
        logs: () => stderr,
        stop: async (graceMs = 10_000) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(force);
        },
        kill: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGKILL');
          await exited;
        },
      };
      resolve(role);
    });
  });
}

/** Writes `yaml` to a config file in a fresh temp dir and returns its path. */
export function writeConfig(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-test-'));
  const path = join(dir, 'cluster.yaml');
  writeFileSync(path, yaml);
  return path;
}

/** Reads one sample of a Prometheus metric from a `/metrics` text (sum over matching series). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** How a finished `mcp-cluster` command ended. */
export interface CliResult {
  /** Exit code; null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a CLI run: ours without any MCP_CLUSTER_* variable, so that a variable set on
 * the machine running the tests (a broker URL, a config file) cannot change the outcome; logs at warn
 * unless `extra` says otherwise.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('MCP_CLUSTER_')) env[key] = value;
  }
  return { ...env, MCP_CLUSTER_LOG_LEVEL: 'warn', ...extra };
}

/** Runs `mcp-cluster <args>` to completion in {@link cleanEnv} plus `env`; SIGKILL after `timeoutMs`. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: cleanEnv(env), timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const failure = err as (Error & { code?: number | string; signal?: NodeJS.Signals | null }) | null;
        resolve({
          code: failure ? (typeof failure.code === 'number' ? failure.code : null) : 0,
          signal: failure?.signal ?? null,
          stdout: String(stdout),
          stderr: String(stderr),
        });
      },
    );
  });
}

/** Lines like `    at fn (file.js:1:2)`: a stack trace, which no user error should print. */
export const STACK_TRACE = /^\s+at .+[:(]/m;

/** `mcp-cluster up` running as its own process (see {@link startUp}). */
export interface UpProcess {
  /** What it printed on stdout up to its banner's end. */
  readonly banner: string;
  /** The MCP endpoint the banner names, e.g. `http://127.0.0.1:PORT/mcp`. */
  readonly mcpUrl: string;
  /** Everything it wrote to stderr so far (its JSON logs). */
  logs(): string;
  /** SIGTERM, then SIGKILL after 15 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `mcp-cluster up --port 0 <args>` in {@link cleanEnv} plus `env` and resolves once it
 * printed its banner (`up` prints people's text, not a JSON ready line, so {@link startRole} does
 * not fit it). Rejects with its stderr when it exits first or prints no banner within 20 s.
 */
export async function startUp(args: string[], env: Record<string, string> = {}): Promise<UpProcess> {
  const child = spawn(process.execPath, [CLI, 'up', '--port', '0', ...args], {
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`up printed no banner in 20 s:\n${stderr}`)), 20_000);
    child.once('exit', () => reject(new Error(`up exited before its banner:\n${stderr}`)));
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('Ctrl-C stops it.')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return {
    banner: stdout,
    mcpUrl: /MCP endpoint \(Streamable HTTP\):\s+(\S+)/.exec(stdout)?.[1] ?? '',
    logs: () => stderr,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(force);
      return code;
    },
  };
}
