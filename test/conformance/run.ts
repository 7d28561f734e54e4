import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { startConformanceCluster } from '../support/cluster.js';
import { trackChild } from '../support/process-guard.js';
import { startUp } from '../support/processes.js';

/**
 * `npm run conformance`: the official MCP conformance suite (`@modelcontextprotocol/conformance`,
 * pinned exactly in package.json) at each spec revision it has a requirement set for, against the
 * cluster in each deployment mode: 2 revisions x 2 modes, 4 suite runs.
 *
 * - Revisions: the suite's `--requirements <revision>` runs exactly what that revision requires, at
 *   its own wire (2025-11-25: the stateful initialize handshake; 2026-07-28: stateless, per-request
 *   `_meta`), plus the scenarios the revision's requirement set lists under `not_scored`.
 * - Modes: `embedded` is `mcp-cluster up --conformance` (memory queue, in-process delivery, one
 *   process); `nats` is separate OS processes (nats-server with JetStream, the simulated backend,
 *   `mcp-cluster ingress` and `mcp-cluster worker --pool conformance`), each call crossing
 *   ingress → JetStream → worker → gRPC delivery → ingress.
 *
 * Scoring is the suite's own: a scenario in the revision's `server` list (requirements/<rev>.yaml
 * of the pinned package) fails the run when any of its checks is a FAILURE, or when it leaves no
 * result; a scenario under `not_scored` is listed with its state and the suite's reason
 * (extension, pending, added-after-release) and never fails it. Exit 1 on any scored failure.
 *
 * `npm run conformance -- --mode embedded|nats --requirements 2025-11-25|2026-07-28` runs a subset
 * (each flag may repeat; left out, every mode or revision runs); `--output DIR` keeps the results.
 */

/** Spec revisions the runner scores against: every requirement set the pinned suite bundles. */
export const REVISIONS = ['2025-11-25', '2026-07-28'] as const;
export type Revision = (typeof REVISIONS)[number];

/** Deployment modes the suite runs against (see the module comment). */
export const MODES = ['embedded', 'nats'] as const;
export type Mode = (typeof MODES)[number];

/** Why the suite runs a scenario without scoring it (its requirement sets' `reason`). */
export type UnscoredReason = 'extension' | 'pending' | 'added-after-release';

/** The server scenarios one revision's requirement set names. */
export interface Requirements {
  revision: string;
  /** Scenarios a conforming server must pass at this revision: a FAILURE in one fails the run. */
  scored: readonly string[];
  /** Scenarios the suite runs for visibility at this revision and does not score. */
  notScored: readonly { scenario: string; reason: UnscoredReason; note?: string }[];
}

/** Outcome of one scenario, from its checks.json. */
export interface ScenarioResult {
  scenario: string;
  passed: number;
  failed: number;
  /** Messages of the failed checks. */
  failures: string[];
}

/** One suite run scored: see {@link score}. */
export interface Verdict {
  /** Every scored scenario; `ok` when it has a result and no FAILURE check. */
  scored: { scenario: string; ok: boolean; result?: ScenarioResult }[];
  /** Every unscored scenario with its state: `fail` when a check failed, `none` when it left no result. */
  unscored: {
    scenario: string;
    reason: UnscoredReason;
    note?: string;
    state: 'pass' | 'fail' | 'none';
    result?: ScenarioResult;
  }[];
  /** Scored scenarios that passed and failed. */
  passed: number;
  failed: number;
}

/** The `requirements/` folder of the pinned suite package. */
export function suiteRequirementsDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('@modelcontextprotocol/conformance/package.json')), 'requirements');
}

/** The revisions the pinned suite has a requirement set for, sorted. */
export function suiteRevisions(dir = suiteRequirementsDir()): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -'.yaml'.length))
    .sort();
}

/** The server side of `requirements/<revision>.yaml` in the pinned suite (its `server` and `not_scored` lists). */
export function readRequirements(revision: string, dir = suiteRequirementsDir()): Requirements {
  const doc = parseYaml(readFileSync(join(dir, `${revision}.yaml`), 'utf8')) as {
    server?: string[];
    not_scored?: { scenario: string; leg: string; reason: UnscoredReason; note?: string }[];
  };
  return {
    revision,
    scored: doc.server ?? [],
    notScored: (doc.not_scored ?? [])
      .filter((e) => e.leg === 'server')
      .map((e) => ({
        scenario: e.scenario,
        reason: e.reason,
        ...(e.note ? { note: e.note.trim() } : {}),
      })),
  };
}

/** A result folder is `server-<scenario>-<ISO time with - for : and .>`. */
const RESULT_DIR = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

/** Reads every scenario's checks.json under `dir` (the suite's `--output-dir`). */
export function readResults(dir: string): Map<string, ScenarioResult> {
  const results = new Map<string, ScenarioResult>();
  for (const entry of readdirSync(dir)) {
    const scenario = RESULT_DIR.exec(entry)?.[1];
    if (!scenario) continue;
    const checks = JSON.parse(readFileSync(join(dir, entry, 'checks.json'), 'utf8')) as {
      id: string;
      status: string;
      errorMessage?: string;
    }[];
    // WARNING, INFO and SKIPPED checks do not fail a scenario; the suite scores FAILURE only.
    const failed = checks.filter((c) => c.status === 'FAILURE');
    results.set(scenario, {
      scenario,
      passed: checks.filter((c) => c.status === 'SUCCESS').length,
      failed: failed.length,
      failures: failed.map((c) => `${c.id}: ${c.errorMessage ?? 'failed'}`),
    });
  }
  return results;
}

/**
 * Scores one suite run as the suite does: a scored scenario fails on any FAILURE check (and here
 * also when it left no result: a required scenario that did not run is not passed); an unscored
 * one only gets its state.
 */
export function score(requirements: Requirements, results: ReadonlyMap<string, ScenarioResult>): Verdict {
  const scored = requirements.scored.map((scenario) => {
    const result = results.get(scenario);
    return { scenario, ok: result !== undefined && result.failed === 0, ...(result ? { result } : {}) };
  });
  const unscored = requirements.notScored.map(({ scenario, reason, note }) => {
    const result = results.get(scenario);
    const state: 'pass' | 'fail' | 'none' = !result ? 'none' : result.failed > 0 ? 'fail' : 'pass';
    return { scenario, reason, ...(note ? { note } : {}), state, ...(result ? { result } : {}) };
  });
  const passed = scored.filter((s) => s.ok).length;
  return { scored, unscored, passed, failed: scored.length - passed };
}

/** The cluster under test in one mode: its MCP endpoint and how to stop everything it started. */
interface Target {
  url: string;
  stop(): Promise<void>;
}

/** The suite's `test://` resources, resource template and `test_*` prompts, served from the catalog. */
const CATALOG = fileURLToPath(new URL('../../../deploy/conformance/catalog.yaml', import.meta.url));

/** `mcp-cluster up --conformance --config deploy/conformance/catalog.yaml --port 0`: every role in one process. */
async function startEmbedded(): Promise<Target> {
  const up = await startUp(['--conformance', '--config', CATALOG]);
  return {
    url: up.mcpUrl,
    stop: async () => {
      await up.stop();
    },
  };
}

/**
 * Separate OS processes on NATS JetStream: nats-server on a free port with its store in a temp dir,
 * the simulated backend (the conformance pool's endpoint only answers the worker's health probe),
 * one ingress (which serves the catalog's resources and prompts) and one worker for the pool
 * `conformance`, which delivers results to the ingress over gRPC.
 */
async function startNats(): Promise<Target> {
  const cluster = await startConformanceCluster({
    name: 'conformance',
    ingresses: 1,
    catalog: readFileSync(CATALOG, 'utf8'),
  });
  return { url: cluster.urls[0] as string, stop: () => cluster.stop() };
}

const START: Record<Mode, () => Promise<Target>> = { embedded: startEmbedded, nats: startNats };

/** Runs the suite's `server` command with `args`; resolves with its exit code (its output passes through). */
function runSuite(args: string[]): Promise<number | null> {
  const bin = join(suiteRequirementsDir(), '..', 'dist', 'index.js');
  const child = spawn(process.execPath, [bin, 'server', ...args], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  trackChild(child);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** The pinned suite's version, for the report. */
function suiteVersion(): string {
  const pkg = join(suiteRequirementsDir(), '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

/** One suite run: a mode, a revision, its verdict and the suite's own exit code. */
export interface Run {
  mode: Mode;
  revision: Revision;
  verdict: Verdict;
  suiteExit: number | null;
}

/** The report after every run: a mode x revision table, the scored failures, the unscored scenarios. */
export function report(runs: readonly Run[], version: string): string {
  const lines = ['', `=== mcp-cluster conformance (@modelcontextprotocol/conformance ${version}) ===`, ''];
  const row = (cells: string[]) => `  ${cells.map((c, i) => c.padEnd([10, 12, 16, 14, 0][i] ?? 0)).join('')}`;
  lines.push(row(['mode', 'revision', 'scored passed', 'scored failed', 'suite exit']));
  for (const r of runs) {
    lines.push(
      row([
        r.mode,
        r.revision,
        `${r.verdict.passed}/${r.verdict.scored.length}`,
        String(r.verdict.failed),
        String(r.suiteExit),
      ]),
    );
  }
  // Scored failures, one line per revision and scenario, naming the modes it failed in and the
  // first failed check (of the first of those modes).
  const failures = new Map<string, { modes: Mode[]; first: string }>();
  for (const r of runs) {
    for (const s of r.verdict.scored.filter((x) => !x.ok)) {
      const key = `${r.revision} ${s.scenario}`;
      const more = s.result && s.result.failures.length > 1 ? ` (+${s.result.failures.length - 1} more)` : '';
      const entry = failures.get(key) ?? {
        modes: [],
        first: s.result ? `${clip(s.result.failures[0] ?? '', 150)}${more}` : 'no result',
      };
      entry.modes.push(r.mode);
      failures.set(key, entry);
    }
  }
  if (failures.size > 0) {
    lines.push('', 'Scored failures (revision, scenario, modes: first failed check):');
    for (const [key, { modes, first }] of failures) lines.push(`  ${key} [${modes.join(', ')}]: ${first}`);
  }
  // Unscored scenarios as a matrix: one line each, its state in every run that lists it.
  const unscored = new Map<string, { reason: string; states: Map<string, string> }>();
  for (const r of runs) {
    for (const u of r.verdict.unscored) {
      const entry = unscored.get(u.scenario) ?? { reason: u.reason, states: new Map<string, string>() };
      const counts = u.result ? ` ${u.result.passed}/${u.result.passed + u.result.failed}` : '';
      entry.states.set(`${r.mode} ${r.revision}`, `${u.state}${counts}`);
      unscored.set(u.scenario, entry);
    }
  }
  if (unscored.size > 0) {
    const columns = runs.map((r) => `${r.mode} ${r.revision}`);
    lines.push(
      '',
      'Not scored (the suite runs them for visibility; they never fail the run), state and checks passed/run:',
    );
    lines.push(
      `  ${'scenario'.padEnd(38)}${'reason'.padEnd(21)}${columns.map((c) => c.padEnd(21)).join('')}`,
    );
    for (const [scenario, { reason, states }] of unscored) {
      const cells = columns.map((c) => (states.get(c) ?? '-').padEnd(21)).join('');
      lines.push(`  ${scenario.padEnd(38)}${reason.padEnd(21)}${cells}`);
    }
  }
  const failed = runs.reduce((n, r) => n + r.verdict.failed, 0);
  lines.push(
    '',
    failed === 0 ? 'Every scored scenario passed.' : `${failed} scored scenario run(s) failed.`,
    '',
  );
  return lines.join('\n');
}

/** `text` cut to `max` characters, with an ellipsis when cut. */
function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * `--mode` and `--requirements`, each repeatable; every mode and revision when left out.
 * `--output DIR` keeps each run's results (the suite's checks.json per scenario) in
 * `DIR/<mode>-<revision>`; left out, they go to a temp dir removed after scoring.
 */
function selection(argv: string[]): { modes: Mode[]; revisions: Revision[]; output?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      mode: { type: 'string', multiple: true },
      requirements: { type: 'string', multiple: true },
      output: { type: 'string' },
    },
  });
  const pick = <T extends string>(given: string[] | undefined, all: readonly T[], flag: string): T[] => {
    if (!given) return [...all];
    for (const g of given) {
      if (!all.includes(g as T)) throw new Error(`${flag} ${g}: expected one of ${all.join(', ')}`);
    }
    return all.filter((a) => given.includes(a));
  };
  return {
    modes: pick(values.mode, MODES, '--mode'),
    revisions: pick(values.requirements, REVISIONS, '--requirements'),
    ...(values.output ? { output: values.output } : {}),
  };
}

async function main(argv: string[]): Promise<number> {
  const { modes, revisions, output } = selection(argv);
  const version = suiteVersion();
  const runs: Run[] = [];
  for (const mode of modes) {
    const target = await START[mode]();
    try {
      for (const revision of revisions) {
        const out = output
          ? join(output, `${mode}-${revision}`)
          : mkdtempSync(join(tmpdir(), 'mcp-conformance-'));
        if (output) {
          rmSync(out, { recursive: true, force: true });
          mkdirSync(out, { recursive: true });
        }
        try {
          process.stdout.write(
            `\nconformance: ${mode} mode, requirements ${revision}, suite ${version} against ${target.url}\n`,
          );
          const suiteExit = await runSuite(['--url', target.url, '--requirements', revision, '-o', out]);
          const verdict = score(readRequirements(revision), readResults(out));
          runs.push({ mode, revision, verdict, suiteExit });
        } finally {
          if (!output) rmSync(out, { recursive: true, force: true });
        }
      }
    } finally {
      await target.stop();
    }
  }
  process.stdout.write(report(runs, version));
  // The suite's own exit code counts too: it is 1 on a scored FAILURE, and anything else it
  // reports (a crash, a requirement set it cannot run) is no pass either.
  return runs.every((r) => r.verdict.failed === 0 && r.suiteExit === 0) ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`conformance: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
