import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LatencySummary, LoadResult } from './agents.js';
import { peakRssBytes, type RssSample } from './memory.js';
import { lineChartSvg, type Series } from './plot.js';

/** One system at one agent count, with the RSS of its processes while it ran. */
export interface SystemRun {
  system: string;
  agents: number;
  result: LoadResult;
  rss?: RssSample[];
  /**
   * CPU time (user + system) the system's own processes used per call started in the run (warm-up
   * included, since the CPU clock cannot tell the two apart), in milliseconds; the shared simulated backend and the load generator
   * are not counted. On a machine with few cores this, more than latency, says what a call costs.
   */
  cpuMsPerCall?: number;
}

const MIB = 1024 * 1024;

/**
 * A Markdown report: the settings, one table of every run (sorted by agents, systems in order of
 * first appearance), the error kinds seen, then each system against `baseline` at the same
 * agent count (throughput ratio, added p50 and p99), then the cluster's time breakdown when a
 * run reported one.
 */
export function markdownReport(title: string, runs: SystemRun[], baseline: string): string {
  const sorted = sortRuns(runs);
  const lines: string[] = [`## ${title}`, ''];
  const settings = describeSettings(runs);
  if (settings) lines.push(settings, '');

  lines.push(
    '| system | agents | calls | ok | errors | throughput/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU ms/call | peak RSS MiB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const run of sorted) {
    const r = run.result;
    const l = r.latency;
    const errors = errorTotal(r);
    const peak = peakRssBytes(run.rss);
    lines.push(
      row([
        cell(run.system),
        String(run.agents),
        String(r.calls),
        String(r.ok),
        String(errors),
        fixed(r.throughputPerSec, 1),
        ms(l.p50, l.count),
        ms(l.p90, l.count),
        ms(l.p99, l.count),
        ms(l.p999, l.count),
        ms(l.max, l.count),
        run.cpuMsPerCall !== undefined ? fixed(run.cpuMsPerCall, 2) : '—',
        peak > 0 ? fixed(peak / MIB, 1) : '—',
      ]),
    );
  }

  const failing = sorted.filter((run) => errorTotal(run.result) > 0);
  if (failing.length > 0) {
    lines.push('', 'Errors by kind:', '');
    for (const run of failing) {
      const kinds = Object.entries(run.result.errors)
        .sort((a, b) => b[1] - a[1])
        .map(([kind, n]) => {
          const sample = run.result.errorSamples?.[kind];
          return `\`${kind}\` ${n}${sample ? ` (${inlineText(sample)})` : ''}`;
        });
      lines.push(`- ${cell(run.system)}, ${run.agents} agents: ${kinds.join(', ')}`);
    }
  }

  const base = new Map(sorted.filter((r) => r.system === baseline).map((r) => [r.agents, r]));
  const compared = sorted.filter((r) => r.system !== baseline && base.has(r.agents));
  lines.push('');
  if (compared.length > 0) {
    lines.push(
      `### Against ${cell(baseline)} at the same agent count`,
      '',
      `| system | agents | throughput ratio | added p50 ms | added p99 ms |`,
      '| --- | ---: | ---: | ---: | ---: |',
    );
    for (const run of compared) {
      const b = base.get(run.agents)!.result;
      const r = run.result;
      const usable = r.latency.count > 0 && b.latency.count > 0;
      lines.push(
        row([
          cell(run.system),
          String(run.agents),
          b.throughputPerSec > 0 ? `${fixed(r.throughputPerSec / b.throughputPerSec, 2)}×` : '—',
          usable ? signed(r.latency.p50 - b.latency.p50) : '—',
          usable ? signed(r.latency.p99 - b.latency.p99) : '—',
        ]),
      );
    }
    lines.push('');
  } else if (runs.length > 0 && !runs.some((r) => r.system === baseline)) {
    lines.push(`No run of the baseline system "${baseline}" to compare against.`, '');
  }

  const withBreakdown = sorted.filter((r) => r.result.breakdown);
  if (withBreakdown.length > 0) {
    lines.push(
      '### Where the time went (cluster breakdown, ms, p50 / p99)',
      '',
      '| system | agents | queue wait | batch wait | backend | delivery | client-side total |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const run of withBreakdown) {
      const b = run.result.breakdown!;
      lines.push(
        row([
          cell(run.system),
          String(run.agents),
          pair(b.queueWaitMs),
          pair(b.batchWaitMs),
          pair(b.backendMs),
          pair(b.deliveryMs),
          pair(run.result.latency),
        ]),
      );
    }
    lines.push(
      '',
      'Backend time includes the batch wait; the client-side total also holds the HTTP, MCP and ingress time the cluster does not break down.',
      '',
    );
  }
  return `${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}

/** Latency (`p50` or `p99`, client side, ok calls) by agent count, one line per system. */
export function latencyChartSvg(runs: SystemRun[], percentile: 'p50' | 'p99'): string {
  return lineChartSvg({
    title: `${percentile} latency by concurrent agents`,
    xLabel: 'concurrent agents',
    yLabel: `${percentile} latency (ms)`,
    xScale: 'auto',
    xTicksAt: agentCounts(runs),
    series: bySystem(runs, (r) => (r.result.latency.count > 0 ? r.result.latency[percentile] : undefined)),
  });
}

/** Throughput (ok calls per second) by agent count, one line per system. */
export function throughputChartSvg(runs: SystemRun[]): string {
  return lineChartSvg({
    title: 'Throughput by concurrent agents',
    xLabel: 'concurrent agents',
    yLabel: 'ok calls per second',
    xScale: 'auto',
    xTicksAt: agentCounts(runs),
    series: bySystem(runs, (r) => r.result.throughputPerSec),
  });
}

/** RSS over time, one line per named series (the processes of a sample summed). */
export function memoryChartSvg(title: string, series: { name: string; samples: RssSample[] }[]): string {
  return lineChartSvg({
    title,
    xLabel: 'time (s)',
    yLabel: 'resident set size (MiB)',
    xScale: 'linear',
    markers: series.every((s) => s.samples.length <= 60),
    series: series.map((s) => ({
      name: s.name,
      points: s.samples.map((sample): [number, number] => {
        let total = 0;
        for (const v of Object.values(sample.rssBytes)) total += v;
        return [sample.atMs / 1000, total / MIB];
      }),
    })),
  });
}

/**
 * Writes `<name>.json`, `<name>.md` and `<name>-<chart>.svg` for every chart into `dir` (created
 * if missing) and returns the paths written.
 */
export function writeResults(
  dir: string,
  name: string,
  data: { json: unknown; markdown: string; charts: Record<string, string> },
): string[] {
  mkdirSync(dir, { recursive: true });
  const base = safeName(name);
  const written: string[] = [];
  const write = (file: string, text: string): void => {
    const path = join(dir, file);
    writeFileSync(path, text);
    written.push(path);
  };
  write(`${base}.json`, `${JSON.stringify(data.json, null, 2)}\n`);
  write(`${base}.md`, data.markdown.endsWith('\n') ? data.markdown : `${data.markdown}\n`);
  for (const [chart, svg] of Object.entries(data.charts)) write(`${base}-${safeName(chart)}.svg`, svg);
  return written;
}

function sortRuns(runs: SystemRun[]): SystemRun[] {
  const order = new Map<string, number>();
  for (const r of runs) if (!order.has(r.system)) order.set(r.system, order.size);
  return [...runs].sort((a, b) => a.agents - b.agents || order.get(a.system)! - order.get(b.system)!);
}

function bySystem(runs: SystemRun[], value: (run: SystemRun) => number | undefined): Series[] {
  const series = new Map<string, [number, number][]>();
  for (const run of runs) {
    let points = series.get(run.system);
    if (!points) {
      points = [];
      series.set(run.system, points);
    }
    const v = value(run);
    if (v !== undefined && Number.isFinite(v)) points.push([run.agents, v]);
  }
  return [...series].map(([name, points]) => ({ name, points }));
}

function agentCounts(runs: SystemRun[]): number[] {
  return [...new Set(runs.map((r) => r.agents))].sort((a, b) => a - b);
}

function describeSettings(runs: SystemRun[]): string | undefined {
  const first = runs[0]?.result.options;
  if (!first) return undefined;
  const key = (o: LoadResult['options']) =>
    JSON.stringify([o.client, o.mode, o.ratePerSec, o.thinkTimeMs, o.durationMs, o.warmupMs, o.progress]);
  const same = runs.every((r) => key(r.result.options) === key(first));
  const loop =
    first.mode === 'open'
      ? `open loop at ${first.ratePerSec} calls/s`
      : `closed loop, think time ${first.thinkTimeMs ?? 0} ms ±50%`;
  const mix = first.toolMix.map((e) => `${e.tool} (weight ${e.weight})`).join(', ');
  const text = `${first.client} client, ${loop}, ${seconds(first.durationMs)} s measured after ${seconds(first.warmupMs)} s warm-up${first.progress ? ', progress tokens on' : ''}; tools: ${mix}.`;
  return same ? `Settings: ${text}` : `Settings of the first run (others differ, see the JSON): ${text}`;
}

function errorTotal(r: LoadResult): number {
  let n = 0;
  for (const v of Object.values(r.errors)) n += v;
  return n;
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

function cell(text: string): string {
  return inlineText(text);
}

function inlineText(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/\|/g, '\\|');
}

/** Milliseconds with precision to suit the magnitude; '—' when nothing was measured. */
function ms(v: number, count = 1): string {
  if (count === 0) return '—';
  const a = Math.abs(v);
  return fixed(v, a < 10 ? 2 : a < 1000 ? 1 : 0);
}

function pair(s: LatencySummary): string {
  return s.count > 0 ? `${ms(s.p50)} / ${ms(s.p99)}` : '—';
}

function signed(v: number): string {
  const text = ms(Math.abs(v));
  return v > 0 ? `+${text}` : v < 0 ? `−${text}` : '0';
}

function fixed(v: number, digits: number): string {
  return v.toFixed(digits);
}

function seconds(msValue: number): string {
  return String(Math.round(msValue / 100) / 10);
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, '-');
}
