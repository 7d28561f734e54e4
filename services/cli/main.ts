#!/usr/bin/env node
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startWorker, type ToolAdapter, type Worker } from '../../workers/runtime/index.js';
import {
  type ComfySim,
  comfySimMain,
  parseSimArgs,
  startComfySim,
  startSimBackend,
} from '../../workers/sim/index.js';
import {
  type Autoscaler,
  formatPlan,
  kubernetesProvider,
  type LocalProvider,
  localProvider,
  type MetricsSource,
  metricsProvider,
  planCapacity,
  planToJson,
  prometheusSource,
  type ReplicaLauncher,
  type ScalingProvider,
  scrapeSource,
  startAutoscaler,
  workerProcessLauncher,
} from '../autoscaler/index.js';
import {
  type Broker,
  brokerScheme,
  ClusterError,
  createLogger,
  exitOnSignals,
  openBroker,
  parseDurationMs,
  processId,
  type ResolvedConfig,
  type Stoppable,
} from '../core/index.js';
import { startIngress } from '../ingress/index.js';
import { families } from './families.js';

const USAGE = `mcp-cluster: serve GPU-backed MCP tools to AI agents at scale

Usage:
  mcp-cluster up [--config FILE] [--port N] [--autoscale]
                                                     everything in one process (memory queue, simulated
                                                     backends for pools without endpoints); --autoscale
                                                     sizes each pool's in-process workers by its load
  mcp-cluster ingress [--config FILE] [--broker URL] [--port N] [--delivery-port N]
  mcp-cluster worker --pool NAME [--config FILE] [--broker URL] [--port N]
  mcp-cluster autoscaler [--config FILE] [--broker URL] [--port N]
                                                     sizes every pool from its queue (autoscaler.provider:
                                                     kubernetes, local worker processes or metrics only)
  mcp-cluster sim [--kind vllm|comfyui] [--port N] [--ttft-ms N] [--tokens-per-second N] ...
  mcp-cluster config check [--config FILE]
  mcp-cluster plan [--config FILE] (--metrics URL ... | --prometheus URL) [--window 10s] [--what-if X]
                   [--target-wait 1s] [--percentile 0.95] [--json]
                                                     observe per-pool rates, then size each pool for a
                                                     queue-wait target (M/M/c) with GPUs and cost

Options:
  --config FILE   YAML configuration (default: $MCP_CLUSTER_CONFIG, else built-in defaults)
  --broker URL    nats://host:port, redis://host:port or memory: (overrides broker.url)
  --port N        HTTP port: /mcp on the ingress, /healthz /readyz /metrics on a worker or the
                  autoscaler (which also serves /status)
  -h, --help      this text
`;

const log = createLogger('cli');

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  switch (command) {
    case 'up':
      return up(rest);
    case 'ingress':
      return ingress(rest);
    case 'worker':
      return worker(rest);
    case 'autoscaler':
      return autoscaler(rest);
    case 'sim':
      return sim(rest);
    case 'config':
      return configCheck(rest);
    case 'plan':
      return plan(rest);
    default:
      process.stderr.write(`mcp-cluster: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

const COMMON = {
  config: { type: 'string' },
  broker: { type: 'string' },
  port: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse<T extends Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>>(
  args: string[],
  options: T,
) {
  try {
    // No command takes positional arguments: a stray one (`config check my.yaml`) is an error, not ignored.
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `${(err as Error).message} (see mcp-cluster --help)`, {
      cause: err,
    });
  }
}

function portFlag(value: string | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) > 65535) {
    throw new ClusterError('INVALID_CONFIG', `${flag} must be a port number 0-65535, got "${value}"`);
  }
  return value;
}

function configFrom(
  values: { config?: string | undefined; broker?: string | undefined },
  env: Record<string, string | undefined>,
): ResolvedConfig {
  const merged = { ...process.env, ...env };
  if (values.broker !== undefined) merged.MCP_CLUSTER_BROKER_URL = values.broker;
  return families.loadConfig(values.config ?? process.env.MCP_CLUSTER_CONFIG, merged);
}

function brokerFor(config: ResolvedConfig): Promise<Broker> {
  return openBroker({ url: config.brokerUrl, namespace: config.namespace, pools: Object.keys(config.pools) });
}

async function up(args: string[]): Promise<number> {
  const { values } = parse(args, { ...COMMON, autoscale: { type: 'boolean' } });
  if (values.help) return help();
  const port = portFlag(values.port, '--port');
  let config = configFrom(values, port ? { MCP_CLUSTER_INGRESS_PORT: port } : {});
  const sims: { url: string; close(): Promise<void> }[] = [];
  const pools: Record<string, ResolvedConfig['pools'][string]> = {};
  for (const [name, pool] of Object.entries(config.pools)) {
    if (pool.endpoints.length > 0) {
      pools[name] = pool;
      continue;
    }
    // One simulated GPU per pool: ComfyUI for diffusion, the vLLM/TEI stand-in otherwise.
    const comfy = pool.backend === 'comfyui';
    const backend = comfy ? await startComfySim({}) : await startSimBackend({});
    sims.push(backend);
    pools[name] = {
      ...pool,
      endpoints: [
        { url: backend.url, maxConcurrency: families.backend(pool.backend)?.endpointConcurrency ?? 1 },
      ],
    };
    log.info('simulated backend started', { pool: name, backend: pool.backend, url: backend.url });
  }
  config = { ...config, pools };
  const broker = await brokerFor(config);
  const front = await startIngress(config, broker);
  const adapters = families.adapters(config);
  let workers: Worker[] = [];
  let scaler: Autoscaler | undefined;
  let rates: MetricsSource | undefined;
  if (values.autoscale) {
    // Pools start at their scaling.minReplicas (0 by default: the first queued call wakes the pool
    // within one autoscaler interval). Every metric of this process is on the ingress's /metrics.
    rates = scrapeSource(() => [front.url.replace(/\/mcp$/, '/metrics')]);
    scaler = await startAutoscaler({
      config,
      broker,
      provider: localProvider({ launch: inProcessLauncher(config, broker, adapters) }),
      source: rates,
    });
  } else {
    workers = await Promise.all(
      Object.keys(config.pools).map((pool) =>
        startWorker({
          config,
          pool,
          broker,
          adapters,
          workerId: `${processId()}-${pool}`,
          serveHttp: false,
        }),
      ),
    );
  }
  const roles: Stoppable[] = [
    {
      get state() {
        return front.state;
      },
      async shutdown() {
        await front.shutdown();
        // The autoscaler drains the workers it started.
        await scaler?.shutdown();
        await rates?.close?.();
        await Promise.all(workers.map((w) => w.shutdown()));
        await families.close();
        await broker.close();
        await Promise.all(sims.map((s) => s.close()));
      },
    },
  ];
  exitOnSignals(roles, (err) => log.error('shutdown failed', { err }));
  process.stdout.write(
    [
      '',
      `mcp-cluster is up (embedded: ${config.brokerUrl} queue, ${Object.keys(config.pools).length} pools${sims.length ? `, ${sims.length} simulated backends` : ''})`,
      '',
      `  MCP endpoint (Streamable HTTP):  ${front.url}`,
      `  tools:                           ${config.tools.map((t) => t.name).join(', ')}`,
      `  health / metrics:                ${front.url.replace(/\/mcp$/, '')}/readyz  ${front.url.replace(/\/mcp$/, '')}/metrics`,
      ...(scaler
        ? [
            `  autoscaler (in-process workers): ${scaler.url}/status  (pools start at scaling.minReplicas;`,
            '                                   a call to an idle pool wakes it within autoscaler.interval)',
          ]
        : []),
      '',
      '  Connect a client, for example the MCP Inspector CLI:',
      `    npx @modelcontextprotocol/inspector --cli ${front.url} --transport http --method tools/list`,
      '',
      '  Ctrl-C stops it.',
      '',
    ].join('\n'),
  );
  return -1;
}

async function ingress(args: string[]): Promise<number> {
  const { values } = parse(args, { ...COMMON, 'delivery-port': { type: 'string' } });
  if (values.help) return help();
  const env: Record<string, string> = {};
  const port = portFlag(values.port, '--port');
  const deliveryPort = portFlag(values['delivery-port'], '--delivery-port');
  if (port) env.MCP_CLUSTER_INGRESS_PORT = port;
  if (deliveryPort) env.MCP_CLUSTER_DELIVERY_PORT = deliveryPort;
  const config = configFrom(values, env);
  const broker = await brokerFor(config);
  const front = await startIngress(config, broker);
  exitOnSignals(
    [
      {
        get state() {
          return front.state;
        },
        async shutdown() {
          await front.shutdown();
          await broker.close();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(
    `${JSON.stringify({ role: 'ingress', url: front.url, delivery: front.deliveryAddress })}\n`,
  );
  return -1;
}

async function worker(args: string[]): Promise<number> {
  const { values } = parse(args, { ...COMMON, pool: { type: 'string' } });
  if (values.help) return help();
  if (!values.pool)
    throw new ClusterError('INVALID_CONFIG', 'mcp-cluster worker needs --pool NAME (e.g. --pool inference)');
  const port = portFlag(values.port, '--port');
  const config = configFrom(values, port ? { MCP_CLUSTER_WORKER_PORT: port } : {});
  if (!config.pools[values.pool]) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `--pool "${values.pool}" is not a pool in the configuration (have: ${Object.keys(config.pools).join(', ')})`,
    );
  }
  const broker = await brokerFor(config);
  const running = await startWorker({
    config,
    pool: values.pool,
    broker,
    adapters: families.adapters(config),
    workerId: `${processId()}-${values.pool}`,
  });
  exitOnSignals(
    [
      {
        get state() {
          return running.state;
        },
        async shutdown() {
          await running.shutdown();
          await families.close();
          await broker.close();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(`${JSON.stringify({ role: 'worker', pool: values.pool, port: running.port })}\n`);
  return -1;
}

/** Window of the rates read from Prometheus: twice a typical 30 s scrape interval, so `rate()` has samples. */
const PROMETHEUS_RATE_WINDOW_MS = 60_000;

async function autoscaler(args: string[]): Promise<number> {
  const { values } = parse(args, COMMON);
  if (values.help) return help();
  const port = portFlag(values.port, '--port');
  const config = configFrom(values, port ? { MCP_CLUSTER_AUTOSCALER_PORT: port } : {});
  if (brokerScheme(config.brokerUrl) === 'memory') {
    throw new ClusterError(
      'INVALID_CONFIG',
      'mcp-cluster autoscaler reads the queues the ingress and workers share, but broker.url is "memory:", ' +
        'a queue inside one process; set broker.url (or --broker) to nats://... or redis://..., ' +
        'or run everything in one process with `mcp-cluster up --autoscale`',
    );
  }
  const kind = config.autoscaler.provider;
  const bare = Object.values(config.pools).filter((p) => p.endpoints.length === 0);
  if (kind === 'local' && bare.length > 0) {
    // Each would fail to start on every try; say so now rather than in a loop of failing workers.
    throw new ClusterError(
      'INVALID_CONFIG',
      `autoscaler.provider local starts \`mcp-cluster worker\` processes, which need backend endpoints; ` +
        `${bare.map((p) => `pools.${p.name}.endpoints`).join(', ')} ${bare.length > 1 ? 'are' : 'is'} empty ` +
        `(set them or MCP_CLUSTER_BACKENDS_${bare[0]?.name.toUpperCase()})`,
    );
  }
  const host = config.worker.host;
  const configPath = values.config ?? process.env.MCP_CLUSTER_CONFIG;
  const local: LocalProvider | undefined =
    kind === 'local'
      ? localProvider({
          launch: workerProcessLauncher({
            cliPath: fileURLToPath(import.meta.url),
            args: configPath ? ['--config', configPath] : [],
            // Through the environment rather than --broker: a URL with credentials stays out of `ps`.
            env: { ...process.env, MCP_CLUSTER_BROKER_URL: config.brokerUrl },
            metricsHost: host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host,
            killAfterMs: config.worker.drainGraceMs + 10_000,
          }),
        })
      : undefined;
  let provider: ScalingProvider =
    local ??
    (kind === 'kubernetes'
      ? await kubernetesProvider(config, { log: createLogger('autoscaler', { provider: kind }) })
      : metricsProvider(config));
  let rates: MetricsSource | undefined;
  if (config.autoscaler.prometheusUrl) {
    rates = prometheusSource(
      config.autoscaler.prometheusUrl,
      Math.max(PROMETHEUS_RATE_WINDOW_MS, 2 * config.autoscaler.intervalMs),
    );
  } else if (config.autoscaler.metricsUrls.length > 0 || local) {
    rates = scrapeSource(() => [...config.autoscaler.metricsUrls, ...(local?.metricsUrls() ?? [])]);
  }
  if (kind === 'metrics' && rates) {
    // Carry on from the workers that run now (a restarted autoscaler), not from minReplicas.
    const seen = await rates.read().catch(() => undefined);
    const initial: Record<string, number> = {};
    for (const [pool, r] of seen ?? []) if (r.replicas > 0) initial[pool] = Math.round(r.replicas);
    provider = metricsProvider(config, { initial });
  }
  const broker = await brokerFor(config);
  const running = await startAutoscaler({
    config,
    broker,
    provider,
    ...(rates ? { source: rates } : {}),
    ...(local ? { describeReplicas: () => local.list() } : {}),
  });
  exitOnSignals(
    [
      {
        get state() {
          return running.state;
        },
        async shutdown() {
          // Drains the local provider's workers before the broker closes.
          await running.shutdown();
          await rates?.close?.();
          await broker.close();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(
    `${JSON.stringify({ role: 'autoscaler', url: running.url, provider: provider.kind, pools: Object.keys(config.pools) })}\n`,
  );
  return -1;
}

/** Workers started inside this process (`mcp-cluster up --autoscale`), all on the one memory queue. */
function inProcessLauncher(
  config: ResolvedConfig,
  broker: Broker,
  adapters: Record<string, ToolAdapter>,
): ReplicaLauncher {
  let launched = 0;
  return async (pool) => {
    const id = `${processId()}-${pool}-${++launched}`;
    const running = await startWorker({ config, pool, broker, adapters, workerId: id, serveHttp: false });
    let stopped: () => void = () => undefined;
    const exited = new Promise<void>((resolve) => {
      stopped = resolve;
    });
    return {
      id,
      pid: undefined,
      metricsUrl: undefined,
      exited,
      drain: async () => {
        await running.shutdown();
        stopped();
      },
    };
  };
}

async function sim(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) return help();
  const kindAt = args.indexOf('--kind');
  const kind = kindAt >= 0 ? args[kindAt + 1] : 'vllm';
  if (kind !== 'vllm' && kind !== 'comfyui') {
    throw new ClusterError('INVALID_CONFIG', `--kind must be vllm or comfyui, got "${kind ?? ''}"`);
  }
  const rest = kindAt >= 0 ? [...args.slice(0, kindAt), ...args.slice(kindAt + 2)] : args;
  if (kind === 'comfyui') {
    let comfy: ComfySim;
    try {
      comfy = await comfySimMain(rest);
    } catch (err) {
      if (err instanceof ClusterError) throw err;
      throw new ClusterError('INVALID_CONFIG', (err as Error).message, { cause: err });
    }
    exitOnSignals([{ state: 'running', shutdown: () => comfy.close() }], (err) =>
      log.error('shutdown failed', { err }),
    );
    return -1;
  }
  let options: ReturnType<typeof parseSimArgs>;
  try {
    options = parseSimArgs(rest);
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', (err as Error).message, { cause: err });
  }
  const backend = await startSimBackend(options);
  exitOnSignals([{ state: 'running', shutdown: () => backend.close() }], (err) =>
    log.error('shutdown failed', { err }),
  );
  process.stdout.write(`${JSON.stringify({ role: 'sim', kind: 'vllm', url: backend.url })}\n`);
  return -1;
}

async function configCheck(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') return help();
  if (sub !== 'check') {
    process.stderr.write('mcp-cluster: usage: mcp-cluster config check [--config FILE]\n');
    return 2;
  }
  const { values } = parse(rest, COMMON);
  if (values.help) return help();
  const config = configFrom(values, {});
  process.stdout.write(
    `${JSON.stringify(
      {
        ok: true,
        broker: config.brokerUrl,
        namespace: config.namespace,
        pools: Object.fromEntries(
          Object.values(config.pools).map((p) => [
            p.name,
            { backend: p.backend, endpoints: p.endpoints.map((e) => e.url) },
          ]),
        ),
        tools: config.tools.map((t) => ({
          name: t.name,
          pool: t.pool,
          model: t.model,
          deadlineMs: t.deadlineMs,
        })),
      },
      null,
      2,
    )}\n`,
  );
  return 0;
}

const PLAN_OPTIONS = {
  config: { type: 'string' },
  metrics: { type: 'string', multiple: true },
  prometheus: { type: 'string' },
  window: { type: 'string' },
  'what-if': { type: 'string' },
  'target-wait': { type: 'string' },
  percentile: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Observation window of `plan` when reading `/metrics` pages: two scrapes this far apart. */
const PLAN_SCRAPE_WINDOW_MS = 10_000;
/** Rate window of `plan` against Prometheus: several scrape intervals, so `rate()` has samples. */
const PLAN_PROMETHEUS_WINDOW_MS = 5 * 60_000;

/**
 * `mcp-cluster plan`: reads per-pool rates (two scrapes of the `/metrics` pages `--window` apart, or
 * one Prometheus query over `--window`), then prints the capacity plan. Exit 0 with the plan, 1 when
 * a metrics source cannot be read, 2 on bad flags or when no source is given.
 */
async function plan(args: string[]): Promise<number> {
  const { values } = parse(args, PLAN_OPTIONS);
  if (values.help) return help();
  const whatIf = whatIfFlag(values['what-if']);
  const targetWaitMs = durationFlag(values['target-wait'], '--target-wait', 0);
  const percentile = percentileFlag(values.percentile);
  const windowMs = durationFlag(values.window, '--window', 1);
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

function help(): number {
  process.stdout.write(USAGE);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // -1: a long-running role is serving; it exits on SIGTERM/SIGINT.
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ClusterError) {
      process.stderr.write(`mcp-cluster: ${err.code}: ${err.message}\n`);
      process.exit(err.code === 'INVALID_CONFIG' ? 2 : 1);
    }
    const sys = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (sys?.syscall === 'listen' && (sys.code === 'EADDRINUSE' || sys.code === 'EACCES')) {
      // A busy or privileged port is a configuration problem, not a crash: no stack trace.
      process.stderr.write(
        `mcp-cluster: INVALID_CONFIG: cannot listen on ${sys.address ?? ''}:${sys.port ?? ''}: ${sys.code === 'EADDRINUSE' ? 'address already in use' : 'permission denied'} (choose a free port)\n`,
      );
      process.exit(2);
    }
    process.stderr.write(`mcp-cluster: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
