import { startWorker } from '../../../workers/runtime/index.js';
import { ClusterError, createLogger, exitOnSignals, processId } from '../../core/index.js';
import { COMMON, configFrom, type ExitCode, parse, portFlag, SERVING } from '../args.js';
import { brokerFor, deliveryFor, jobStoreFor, requireSharedBroker, workerDeliveryFor } from '../compose.js';
import { families } from '../families.js';
import { startTracing } from '../tracing.js';
import { help } from '../usage.js';

const log = createLogger('cli');

/** The flags of `mcp-cluster worker`. */
export const WORKER_OPTIONS = { ...COMMON, pool: { type: 'string' } } as const;

/** `mcp-cluster worker --pool NAME`: one worker of a pool; prints `{"role":"worker","pool","port"}` once ready. */
export async function worker(args: string[]): Promise<ExitCode> {
  const { values } = parse(args, WORKER_OPTIONS);
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
  requireSharedBroker('worker', values);
  // Before anything serves: a bad OTEL_* setting stops the role here, with its name.
  const tracing = await startTracing('worker');
  const broker = await brokerFor(config);
  const jobStore = await jobStoreFor(config);
  const running = await startWorker({
    config,
    pool: values.pool,
    broker,
    adapters: families.adapters(config),
    // Batch chunks are answered into the job store, everything else to its ingress.
    delivery: workerDeliveryFor(deliveryFor(config, false), jobStore),
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
          await jobStore.close();
          await broker.close();
          await tracing?.shutdown();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(`${JSON.stringify({ role: 'worker', pool: values.pool, port: running.port })}\n`);
  return SERVING;
}
