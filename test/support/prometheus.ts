import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { findOnPath, freePort, removeTempDir, trackChild, trackTempDir } from './process-guard.js';
import { waitFor } from './wait.js';

// A real Prometheus server (Debian's `prometheus` package, or any build on PATH) and promtool for
// the suites that test the shipped deploy/prometheus files; `.ci/run` installs them.

/** deploy/prometheus of this checkout. */
export const PROMETHEUS_DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url));

/** How a finished promtool run ended. */
export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `promtool <args>` in `cwd` (default deploy/prometheus) to completion; SIGKILL after 60 s. */
export function promtool(args: string[], cwd = PROMETHEUS_DIR): Promise<ToolResult> {
  const binary = findOnPath('promtool');
  if (!binary) throw new Error('promtool is not installed (apt-get install prometheus)');
  return new Promise((resolve) => {
    execFile(binary, args, { cwd, timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = (err as { code?: unknown } | null)?.code;
      resolve({ code: err ? (typeof code === 'number' ? code : null) : 0, stdout, stderr });
    });
  });
}

/** One role's targets for the shipped config's file discovery (`targets/<file>.json`). */
export interface TargetGroup {
  /** `host:port` of each process serving /metrics. */
  targets: string[];
  labels?: Record<string, string>;
}

/** One query from Prometheus's query log. */
export interface LoggedQuery {
  query: string;
  /** When it was evaluated at, in Unix seconds (milliseconds in the fraction). */
  time: number;
}

/** What {@link startPrometheus} started. */
export interface PrometheusServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** The directory holding its config, rules, targets and query log (the TSDB is below it). */
  readonly dir: string;
  /** The instant queries it has evaluated so far, from its query log, in order. */
  queryLog(): LoggedQuery[];
  /** What it wrote to stderr (its logs). */
  logs(): string;
  /** SIGTERM (SIGKILL after 10 s), then deletes its directory. */
  stop(): Promise<void>;
}

/**
 * Starts Prometheus on a free port of 127.0.0.1 with deploy/prometheus/prometheus.yml as shipped but
 * for what a test must change: `scrapeIntervalS` for scrape and rule evaluation (default 1 s), a
 * query log, and the rule file it names taken from this checkout. The targets are written to
 * `targets/<name>.json` beside the copy, by file name (`ingress`, `workers`, `autoscaler`), which
 * the shipped jobs discover. Resolves once its HTTP API answers ready (30 s at most).
 */
export async function startPrometheus(
  targets: Record<string, TargetGroup[]>,
  scrapeIntervalS = 1,
): Promise<PrometheusServer> {
  const binary = findOnPath('prometheus');
  if (!binary) throw new Error('prometheus is not installed (apt-get install prometheus)');
  const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-prometheus-'));
  trackTempDir(dir);
  const config = parseYaml(readFileSync(join(PROMETHEUS_DIR, 'prometheus.yml'), 'utf8')) as {
    global: Record<string, unknown>;
    rule_files: string[];
  };
  config.global.scrape_interval = `${scrapeIntervalS}s`;
  config.global.evaluation_interval = `${scrapeIntervalS}s`;
  config.global.query_log_file = join(dir, 'queries.log');
  for (const file of config.rule_files) copyFileSync(join(PROMETHEUS_DIR, file), join(dir, file));
  writeFileSync(join(dir, 'prometheus.yml'), stringifyYaml(config));
  mkdirSync(join(dir, 'targets'));
  for (const [name, groups] of Object.entries(targets)) {
    writeFileSync(join(dir, 'targets', `${name}.json`), JSON.stringify(groups));
  }

  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  trackChild(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(force);
    }
    removeTempDir(dir);
  };
  try {
    await waitFor(
      () => `Prometheus ready at ${url}; its log:\n${stderr.slice(-3000)}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}`);
        return (await fetch(`${url}/-/ready`)).ok;
      },
      30_000,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    dir,
    queryLog: () => {
      let text = '';
      try {
        text = readFileSync(join(dir, 'queries.log'), 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => {
          const { params } = JSON.parse(line) as { params?: { query?: string; end?: string } };
          return { query: params?.query ?? '', time: Date.parse(params?.end ?? '') / 1000 };
        });
    },
    logs: () => stderr,
    stop,
  };
}

/** One sample of an instant query's answer. */
export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/**
 * Evaluates `promql` with GET /api/v1/query at `time` (Unix seconds; default now) and returns the
 * samples of its vector. Throws with Prometheus's error when it refuses the query.
 */
export async function instantQuery(url: string, promql: string, time?: number): Promise<Sample[]> {
  const params = new URLSearchParams({ query: promql });
  if (time !== undefined) params.set('time', String(time));
  const res = await fetch(`${url}/api/v1/query?${params}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: Sample[] };
  };
  if (body.status !== 'success' || !body.data) {
    throw new Error(`Prometheus refused ${promql}: ${body.error ?? res.status}`);
  }
  if (body.data.resultType !== 'vector') {
    throw new Error(`${promql} gave a ${body.data.resultType}, not a vector`);
  }
  return body.data.result;
}
