import { fileURLToPath } from 'node:url';
import {
  kubernetesProvider,
  type LocalProvider,
  localProvider,
  type MetricsSource,
  metricsProvider,
  prometheusSource,
  type ScalingProvider,
  scrapeSource,
  startAutoscaler,
  workerProcessLauncher,
} from '../../autoscaler/index.js';
import { backendsVariable, ClusterError, createLogger, exitOnSignals } from '../../core/index.js';
import { COMMON, configFrom, configPathOf, type ExitCode, parse, portFlag, SERVING } from '../args.js';
import { brokerScheme } from '../brokers.js';
import { brokerFor } from '../compose.js';
import { help } from '../usage.js';

const log = createLogger('cli');

/** Window of the rates read from Prometheus: twice a typical 30 s scrape interval, so `rate()` has samples. */
const PROMETHEUS_RATE_WINDOW_MS = 60_000;

/** The CLI's entry file: the local provider starts `mcp-cluster worker` processes with it. */
const CLI_PATH = fileURLToPath(new URL('../main.js', import.meta.url));

/**
 * `mcp-cluster autoscaler`: sizes every pool from its queue through `autoscaler.provider`
 * (kubernetes, local worker processes, or metrics only); prints
 * `{"role":"autoscaler","url","provider","pools"}` once ready.
 */
export async function autoscaler(args: string[]): Promise<ExitCode> {
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
        `(set them or ${backendsVariable(bare[0]?.name ?? '')})`,
    );
  }
  const host = config.worker.host;
  const configPath = configPathOf(values);
  const local: LocalProvider | undefined =
    kind === 'local'
      ? localProvider({
          launch: workerProcessLauncher({
            cliPath: CLI_PATH,
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
  return SERVING;
}
