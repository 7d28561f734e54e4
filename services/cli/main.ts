#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { generateImageAdapter } from '../../workers/diffusion/index.js';
import { closeEmbeddingCaches, embedAdapterFor } from '../../workers/embeddings/index.js';
import { inferenceAdapters } from '../../workers/inference/index.js';
import { startWorker, type ToolAdapter } from '../../workers/runtime/index.js';
import {
  type ComfySim,
  comfySimMain,
  parseSimArgs,
  startComfySim,
  startSimBackend,
} from '../../workers/sim/index.js';
import {
  type Broker,
  ClusterError,
  createLogger,
  DEFAULT_ENDPOINT_CONCURRENCY,
  exitOnSignals,
  loadConfig,
  openBroker,
  processId,
  type ResolvedConfig,
  type Stoppable,
  type ToolTemplate,
} from '../core/index.js';
import { startIngress } from '../ingress/index.js';

const USAGE = `mcp-cluster: serve GPU-backed MCP tools to AI agents at scale

Usage:
  mcp-cluster up [--config FILE] [--port N]          everything in one process (memory queue, simulated
                                                     backends for pools without endpoints)
  mcp-cluster ingress [--config FILE] [--broker URL] [--port N] [--delivery-port N]
  mcp-cluster worker --pool NAME [--config FILE] [--broker URL] [--port N]
  mcp-cluster sim [--kind vllm|comfyui] [--port N] [--ttft-ms N] [--tokens-per-second N] ...
  mcp-cluster config check [--config FILE]

Options:
  --config FILE   YAML configuration (default: $MCP_CLUSTER_CONFIG, else built-in defaults)
  --broker URL    nats://host:port, redis://host:port or memory: (overrides broker.url)
  --port N        HTTP port: /mcp on the ingress, /healthz /readyz /metrics on a worker
  -h, --help      this text
`;

/** The adapter of every tool template; the embed adapter's result cache follows the config. */
function adaptersFor(config: ResolvedConfig): Record<ToolTemplate, ToolAdapter> {
  return { ...inferenceAdapters, embed: embedAdapterFor(config), generate_image: generateImageAdapter };
}

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
    case 'sim':
      return sim(rest);
    case 'config':
      return configCheck(rest);
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

function parse<T extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
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
  return loadConfig(values.config ?? process.env.MCP_CLUSTER_CONFIG, merged);
}

function brokerFor(config: ResolvedConfig): Promise<Broker> {
  return openBroker({ url: config.brokerUrl, namespace: config.namespace, pools: Object.keys(config.pools) });
}

async function up(args: string[]): Promise<number> {
  const { values } = parse(args, COMMON);
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
      endpoints: [{ url: backend.url, maxConcurrency: DEFAULT_ENDPOINT_CONCURRENCY[pool.backend] }],
    };
    log.info('simulated backend started', { pool: name, backend: pool.backend, url: backend.url });
  }
  config = { ...config, pools };
  const broker = await brokerFor(config);
  const front = await startIngress(config, broker);
  const adapters = adaptersFor(config);
  const workers = await Promise.all(
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
  const roles: Stoppable[] = [
    {
      get state() {
        return front.state;
      },
      async shutdown() {
        await front.shutdown();
        await Promise.all(workers.map((w) => w.shutdown()));
        await closeEmbeddingCaches();
        await broker.close();
        await Promise.all(sims.map((s) => s.close()));
      },
    },
  ];
  exitOnSignals(roles, (err) => log.error('shutdown failed', { err }));
  process.stdout.write(
    [
      '',
      `mcp-cluster is up (embedded: ${config.brokerUrl} queue, ${workers.length} pools${sims.length ? `, ${sims.length} simulated backends` : ''})`,
      '',
      `  MCP endpoint (Streamable HTTP):  ${front.url}`,
      `  tools:                           ${config.tools.map((t) => t.name).join(', ')}`,
      `  health / metrics:                ${front.url.replace(/\/mcp$/, '')}/readyz  ${front.url.replace(/\/mcp$/, '')}/metrics`,
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
    adapters: adaptersFor(config),
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
          await closeEmbeddingCaches();
          await broker.close();
        },
      },
    ],
    (err) => log.error('shutdown failed', { err }),
  );
  process.stdout.write(`${JSON.stringify({ role: 'worker', pool: values.pool, port: running.port })}\n`);
  return -1;
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
