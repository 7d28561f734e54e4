import { createLogger, exitOnSignals } from '../../core/index.js';
import { startIngress } from '../../ingress/index.js';
import { COMMON, configFrom, type ExitCode, parse, portFlag, SERVING } from '../args.js';
import { batchJobsFor, brokerFor, deliveryFor, jobStoreFor, requireSharedBroker } from '../compose.js';
import { startTracing } from '../tracing.js';
import { help } from '../usage.js';

const log = createLogger('cli');

/** The flags of `mcp-cluster ingress`. */
export const INGRESS_OPTIONS = { ...COMMON, 'delivery-port': { type: 'string' } } as const;

/** `mcp-cluster ingress`: one ingress replica; prints `{"role":"ingress","url","delivery"}` once ready. */
export async function ingress(args: string[]): Promise<ExitCode> {
  const { values } = parse(args, INGRESS_OPTIONS);
  if (values.help) return help();
  const env: Record<string, string> = {};
  const port = portFlag(values.port, '--port');
  const deliveryPort = portFlag(values['delivery-port'], '--delivery-port');
  if (port) env.MCP_CLUSTER_INGRESS_PORT = port;
  if (deliveryPort) env.MCP_CLUSTER_DELIVERY_PORT = deliveryPort;
  const config = configFrom(values, env);
  // Before anything serves: a bad OTEL_* setting stops the role here, with its name.
  const tracing = await startTracing('ingress');
  requireSharedBroker('ingress', values);
  const broker = await brokerFor(config);
  const jobStore = await jobStoreFor(config);
  const jobs = batchJobsFor(config, broker, jobStore);
  const front = await startIngress(config, broker, deliveryFor(config, false), { jobs, results: jobStore });
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
          await jobs.close();
          await jobStore.close();
          await broker.close();
          await tracing?.shutdown();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(
    `${JSON.stringify({ role: 'ingress', url: front.url, delivery: front.deliveryAddress })}\n`,
  );
  return SERVING;
}
