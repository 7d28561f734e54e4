import {
  formatPlan,
  type MetricsSource,
  type PlanModel,
  planCapacity,
  planToJson,
  prometheusSource,
  scrapeSource,
} from '../../autoscaler/index.js';
import { ClusterError, parseDurationMs } from '../../core/index.js';
import { configFrom, type ExitCode, parse } from '../args.js';
import { help } from '../usage.js';

/** The flags of `mcp-cluster plan`. */
export const PLAN_OPTIONS = {
  config: { type: 'string' },
  metrics: { type: 'string', multiple: true },
  prometheus: { type: 'string' },
  window: { type: 'string' },
  'what-if': { type: 'string' },
  'target-wait': { type: 'string' },
  percentile: { type: 'string' },
  'batch-deadline': { type: 'string' },
  model: { type: 'string' },
  agents: { type: 'string', multiple: true },
  'think-time': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Observation window of `plan` when reading `/metrics` pages: two scrapes this far apart. */
const PLAN_SCRAPE_WINDOW_MS = 10_000;
/** Rate window of `plan` against Prometheus: several scrape intervals, so `rate()` has samples. */
const PLAN_PROMETHEUS_WINDOW_MS = 5 * 60_000;

/**
 * `mcp-cluster plan`: reads per-pool rates (two scrapes of the `/metrics` pages `--window` apart, or
 * one Prometheus query over `--window`), then prints the capacity plan, with the ETA of each pool's
 * low-priority (batch) backlog and the replicas that finish it within `--batch-deadline`. Exit 0 with the plan, 1 when
 * a metrics source cannot be read, 2 on bad flags or when no source is given.
 */
export async function plan(args: string[]): Promise<ExitCode> {
  const { values } = parse(args, PLAN_OPTIONS);
  if (values.help) return help();
  const whatIf = whatIfFlag(values['what-if']);
  const targetWaitMs = durationFlag(values['target-wait'], '--target-wait', 0);
  const percentile = percentileFlag(values.percentile);
  // When each pool's low-priority backlog should be done; default its scaling.batchDrainTarget.
  const batchDeadlineMs = durationFlag(values['batch-deadline'], '--batch-deadline', 1);
  const windowMs = durationFlag(values.window, '--window', 1);
  const model = modelFlag(values.model);
  const agents = agentsFlag(values.agents);
  const thinkTimeMs = durationFlag(values['think-time'], '--think-time', 0);
  if (thinkTimeMs !== undefined && agents === undefined) {
    throw new ClusterError(
      'INVALID_CONFIG',
      '--think-time is the think time of the agents of --agents: pass --agents too (e.g. --agents inference=64)',
    );
  }
  const metricsFlags = (values.metrics ?? []).flatMap((v) => v.split(',')).map((u) => u.trim());
  if (values.metrics !== undefined && metricsFlags.every((u) => u === '')) {
    throw new ClusterError(
      'INVALID_CONFIG',
      '--metrics needs a URL, e.g. --metrics http://10.0.0.5:9464/metrics',
    );
  }
  if (values.metrics !== undefined && values.prometheus !== undefined) {
    throw new ClusterError('INVALID_CONFIG', 'pass either --metrics or --prometheus, not both');
  }
  const config = configFrom(values, {});
  let prometheus = values.prometheus;
  let scrapeUrls = metricsFlags.filter((u) => u !== '').map((u) => metricsUrlFlag(u, '--metrics'));
  if (prometheus === undefined && scrapeUrls.length === 0) {
    if (config.autoscaler.prometheusUrl !== '') prometheus = config.autoscaler.prometheusUrl;
    else scrapeUrls = config.autoscaler.metricsUrls.map((u) => metricsUrlFlag(u, 'autoscaler.metricsUrls'));
  }
  if (prometheus === undefined && scrapeUrls.length === 0) {
    throw new ClusterError(
      'INVALID_CONFIG',
      'mcp-cluster plan needs metrics to read: pass --metrics URL (the /metrics of an ingress or worker; repeat it or give a comma list) or --prometheus URL, or set autoscaler.metricsUrls or autoscaler.prometheusUrl in --config',
    );
  }
  let source: MetricsSource;
  let rates: Awaited<ReturnType<MetricsSource['read']>>;
  if (prometheus !== undefined) {
    if (!/^https?:\/\/[^/]/.test(prometheus)) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `--prometheus must be an http:// or https:// URL, got "${prometheus}"`,
      );
    }
    const rateWindowMs = windowMs ?? PLAN_PROMETHEUS_WINDOW_MS;
    if (rateWindowMs < 1000) {
      throw new ClusterError(
        'INVALID_CONFIG',
        '--window with --prometheus is a rate window: use 1s or more (e.g. 5m)',
      );
    }
    source = prometheusSource(prometheus, rateWindowMs);
    rates = await source.read();
  } else {
    const observeMs = windowMs ?? PLAN_SCRAPE_WINDOW_MS;
    source = scrapeSource(() => scrapeUrls, { failOnUnreachable: true });
    if (process.stderr.isTTY) {
      process.stderr.write(
        `mcp-cluster plan: observing ${scrapeUrls.length} /metrics page(s) for ${observeMs} ms\n`,
      );
    }
    await source.read();
    await new Promise((resolve) => setTimeout(resolve, observeMs));
    rates = await source.read();
  }
  await source.close?.();
  const capacity = planCapacity(rates, config, {
    whatIf,
    ...(targetWaitMs !== undefined ? { targetWaitMs } : {}),
    ...(percentile !== undefined ? { percentile } : {}),
    ...(batchDeadlineMs !== undefined ? { batchDeadlineMs } : {}),
    model,
    ...(agents !== undefined ? { agents } : {}),
    ...(thinkTimeMs !== undefined ? { thinkTimeMs } : {}),
  });
  process.stdout.write(
    values.json ? `${JSON.stringify(planToJson(capacity), null, 2)}\n` : formatPlan(capacity),
  );
  return 0;
}

/** `--what-if`: a multiplier above 0 (2, 1.5, 0.5; a trailing x is allowed: 2x). */
function whatIfFlag(value: string | undefined): number {
  if (value === undefined) return 1;
  const m = /^(\d+(?:\.\d+)?|\.\d+)x?$/i.exec(value.trim());
  const n = m?.[1] === undefined ? Number.NaN : Number(m[1]);
  if (!(n > 0) || !Number.isFinite(n)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `--what-if must be a multiplier above 0 for the arrival rate (e.g. 2 or 1.5), got "${value}"`,
    );
  }
  return n;
}

/** `--model`: mgc (the default) or mmc. */
function modelFlag(value: string | undefined): PlanModel {
  if (value === undefined) return 'mgc';
  const v = value.trim().toLowerCase().replaceAll('/', '');
  if (v === 'mgc' || v === 'mmc') return v;
  throw new ClusterError(
    'INVALID_CONFIG',
    `--model must be mgc (service-time variability as measured) or mmc (exponential service times), got "${value}"`,
  );
}

/** Most agents `--agents` takes for one pool (the closed-loop model's limit). */
const MAX_AGENTS_FLAG = 100_000;

/**
 * `--agents`: `POOL=N` (repeatable, or a comma list) or a bare `N` for every pool with calls;
 * undefined when absent.
 */
function agentsFlag(values: string[] | undefined): Record<string, number> | undefined {
  if (values === undefined) return undefined;
  const agents: Record<string, number> = {};
  for (const item of values.flatMap((v) => v.split(',')).map((v) => v.trim())) {
    const m = /^(?:([A-Za-z0-9_.-]+)=)?(\d+)$/.exec(item);
    const n = Number(m?.[2]);
    if (!m || !(n >= 1 && n <= MAX_AGENTS_FLAG)) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `--agents must be POOL=N or N, the agents calling in a closed loop (1 to ${MAX_AGENTS_FLAG}), e.g. --agents inference=64, got "${item}"`,
      );
    }
    const pool = m[1] ?? '*';
    if (agents[pool] !== undefined) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `--agents gives ${pool === '*' ? 'a bare N' : `pool ${pool}`} twice`,
      );
    }
    agents[pool] = n;
  }
  return agents;
}

/** A duration flag (`250ms`, `10s`, `5m`), at least `minMs`, at most 24h; undefined when absent. */
function durationFlag(value: string | undefined, flag: string, minMs: number): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDurationMs(value);
  if (ms === undefined || ms < minMs || ms > 24 * 3_600_000) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${flag} must be a duration like 500ms, 10s or 5m${minMs > 0 ? ' (above 0)' : ''}, at most 24h, got "${value}"`,
    );
  }
  return ms;
}

/** `--percentile`: a fraction (0.95), a percentage (95%) or p95; undefined when absent. */
function percentileFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(?:p(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)%|(\d*\.\d+))$/i.exec(value.trim());
  const percent = m?.[1] ?? m?.[2];
  const p = percent !== undefined ? Number(percent) / 100 : m?.[3] !== undefined ? Number(m[3]) : Number.NaN;
  if (!(p > 0 && p < 1)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `--percentile must be between 0 and 1 exclusive, written 0.95, 95% or p95, got "${value}"`,
    );
  }
  return p;
}

/** A `/metrics` URL; a bare `http://host:port` gets `/metrics` appended. */
function metricsUrlFlag(value: string, flag: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'http:' && url?.protocol !== 'https:') {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${flag} must be an http:// or https:// URL of a /metrics page, e.g. http://10.0.0.5:9464/metrics, got "${value}"`,
    );
  }
  if (url.pathname === '/') url.pathname = '/metrics';
  return url.toString();
}
