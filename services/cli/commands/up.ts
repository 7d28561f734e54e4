import { type InputToolAdapter, startWorker, type Worker } from '../../../workers/runtime/index.js';
import { startComfySim, startSimBackend } from '../../../workers/sim/index.js';
import {
  type Autoscaler,
  localProvider,
  type MetricsSource,
  type ReplicaLauncher,
  scrapeSource,
  startAutoscaler,
} from '../../autoscaler/index.js';
import {
  type Broker,
  createLogger,
  type DeliveryTransport,
  exitOnSignals,
  processId,
  type ResolvedConfig,
} from '../../core/index.js';
import { startIngress } from '../../ingress/index.js';
import { COMMON, configFrom, type ExitCode, parse, portFlag, SERVING } from '../args.js';
import { batchJobsFor, brokerFor, deliveryFor, jobStoreFor, workerDeliveryFor } from '../compose.js';
import { families } from '../families.js';
import { startTracing } from '../tracing.js';
import { help } from '../usage.js';

const log = createLogger('cli');

/** The flags of `mcp-cluster up`. */
export const UP_OPTIONS = {
  ...COMMON,
  autoscale: { type: 'boolean' },
  conformance: { type: 'boolean' },
} as const;

/**
 * `mcp-cluster up`: every role in this process on one broker (the memory queue unless configured),
 * with a simulated backend for each pool without endpoints; `--autoscale` sizes each pool's
 * in-process workers by its load instead of running one worker per pool.
 */
export async function up(args: string[]): Promise<ExitCode> {
  const { values } = parse(args, UP_OPTIONS);
  if (values.help) return help();
  const port = portFlag(values.port, '--port');
  let config = configFrom(values, {
    ...(port ? { MCP_CLUSTER_INGRESS_PORT: port } : {}),
    // The MCP conformance suite's fixture tools, in their own pool (off unless asked for).
    ...(values.conformance ? { MCP_CLUSTER_CONFORMANCE: 'true' } : {}),
  });
  // Before anything serves: a bad OTEL_* setting stops the role here, with its name.
  const tracing = await startTracing('up');
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
  const jobStore = await jobStoreFor(config);
  const jobs = batchJobsFor(config, broker, jobStore);
  // Workers write batch chunks to the job store; calls from the ingress go back over `delivery`.
  const delivery = workerDeliveryFor(deliveryFor(config, true), jobStore);
  let scaler: Autoscaler | undefined;
  // The status page shows the in-process workers and autoscaler as any other: through the broker's
  // roles ledger, where they publish their status.
  const front = await startIngress(config, broker, delivery, { jobs, results: jobStore });
  const adapters = families.adapters(config);
  let workers: Worker[] = [];
  let rates: MetricsSource | undefined;
  if (values.autoscale) {
    // Pools start at their scaling.minReplicas (0 by default: the first queued call wakes the pool
    // within one autoscaler interval). Every metric of this process is on the ingress's /metrics.
    rates = scrapeSource(() => [front.url.replace(/\/mcp$/, '/metrics')]);
    scaler = await startAutoscaler({
      config,
      broker,
      provider: localProvider({ launch: inProcessLauncher(config, broker, adapters, delivery) }),
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
          delivery,
          workerId: `${processId()}-${pool}`,
          serveHttp: false,
        }),
      ),
    );
  }
  // SIGHUP re-reads the API keys file: a revoked key stops working without a restart.
  process.on('SIGHUP', () => front.reloadCredentials());
  exitOnSignals(
    [
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
          await jobs.close();
          await families.close();
          await jobStore.close();
          await broker.close();
          await Promise.all(sims.map((s) => s.close()));
          await tracing?.shutdown();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  const base = front.url.replace(/\/mcp$/, '');
  process.stdout.write(
    [
      '',
      `mcp-cluster is up (embedded: ${config.brokerUrl} queue, ${Object.keys(config.pools).length} pools${sims.length ? `, ${sims.length} simulated backends` : ''})`,
      '',
      `  MCP endpoint (Streamable HTTP):  ${front.url}`,
      `  tools:                           ${config.tools.map((t) => t.name).join(', ')}${config.tools.some((t) => t.template === 'embed') ? ', embed_batch' : ''}`,
      `  batch jobs (OpenAI Batch API):   ${base}/v1/batches  (or mcp-cluster batch submit FILE)`,
      `  health / metrics:                ${base}/readyz  ${base}/metrics`,
      ...(config.ingress.statusPage.enabled ? [`  status page (live):              ${base}/status`] : []),
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
  return SERVING;
}

/** Workers started inside this process (`mcp-cluster up --autoscale`), all on the one broker. */
function inProcessLauncher(
  config: ResolvedConfig,
  broker: Broker,
  adapters: Record<string, InputToolAdapter>,
  delivery: DeliveryTransport,
): ReplicaLauncher {
  let launched = 0;
  return async (pool) => {
    const id = `${processId()}-${pool}-${++launched}`;
    const running = await startWorker({
      config,
      pool,
      broker,
      adapters,
      delivery,
      workerId: id,
      serveHttp: false,
    });
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
