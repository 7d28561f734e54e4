import { randomUUID } from 'node:crypto';
import type { SimOptions } from '../../workers/sim/index.js';
import { type SpawnedBroker, startNatsServer } from './brokers.js';
import { type RoleProcess, startRole, writeConfig } from './processes.js';

// A cluster of separate OS processes for the end-to-end suites: a broker spawned for the suite, the
// simulated vLLM backend (`mcp-cluster sim`), one config file naming both, and the ingress and worker
// roles started from that config. The suite keeps and stops the roles it starts; `stop()` ends the
// sim and the broker.

/** What {@link startSimCluster} starts. */
export interface SimClusterOptions {
  /**
   * Names the cluster: its namespace is `<name>` plus 8 random hex digits, its ingress session
   * secret `<name>-<random UUID>`, both fresh on each start so suites never share broker state.
   */
  name: string;
  /** Spawns the broker, e.g. `startNatsServer` or `() => startRedisServer({ persistent: true })`. */
  startBroker: () => Promise<SpawnedBroker>;
  /**
   * The sim's settings, passed as its command-line flags (`maxNumSeqs` → `--max-num-seqs`); see
   * `SimOptions` in workers/sim for each one's unit. It always listens on a free port of 127.0.0.1.
   * Those left out keep the sim's defaults: `ttftMs` 20 ms to the first token, `tokensPerSecond`
   * 200 per sequence, `batchPenalty` 0.05, `maxNumSeqs` 16 sequences at once.
   */
  sim: Partial<Omit<SimOptions, 'host' | 'port'>>;
  /**
   * The config after its `cluster`, `broker` and `ingress` lines (which the helper writes: the
   * namespace, the broker's URL, ingress on a free port with the session secret), as YAML:
   * `worker`, `pools`, `tenants`, `tools`. Given the sim's URL, for the pools' endpoints.
   */
  config: (simUrl: string) => string;
  /** More `ingress` settings, as YAML flow mapping members (`resultLinks: { minSize: 100 }`). */
  ingress?: string;
}

/** A broker, a sim and a config file, ready for roles to start; see {@link startSimCluster}. */
export interface SimCluster {
  readonly broker: SpawnedBroker;
  readonly sim: RoleProcess;
  /** The sim's base URL, e.g. `http://127.0.0.1:40123` (its stats at `/sim/stats`). */
  readonly simUrl: string;
  /** The cluster's namespace on the broker, for an `openBroker` of the test's own. */
  readonly namespace: string;
  /** The config file every role starts with. */
  readonly configPath: string;
  /** Starts `mcp-cluster ingress --config <configPath>` as `name`; resolves once it is ready (20 s at most). */
  ingress(name: string): Promise<RoleProcess>;
  /** Starts `mcp-cluster worker --pool <pool> --config <configPath>` as `name`; resolves once it is ready. */
  worker(name: string, pool: string): Promise<RoleProcess>;
  /** Stops the sim (SIGTERM, SIGKILL after 10 s) and disposes of the broker (process and data). */
  stop(): Promise<void>;
}

/** `maxNumSeqs` → `--max-num-seqs`. */
const flag = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * Spawns the broker and the sim, then writes the config for them (see {@link SimClusterOptions}).
 * Starts no role: the suite starts its ingresses and workers with `ingress()` and `worker()`. When
 * the sim fails to start, the broker is disposed of before the error is thrown.
 */
export async function startSimCluster(options: SimClusterOptions): Promise<SimCluster> {
  const broker = await options.startBroker();
  let sim: RoleProcess;
  try {
    const flags = Object.entries(options.sim).flatMap(([key, value]) => [flag(key), String(value)]);
    sim = await startRole('sim', ['sim', '--port', '0', ...flags]);
  } catch (err) {
    await broker.dispose();
    throw err;
  }
  const simUrl = String(sim.ready.url);
  const namespace = `${options.name}${randomUUID().slice(0, 8)}`;
  const configPath = writeConfig(`
cluster: { namespace: ${namespace} }
broker: { url: "${broker.url}" }
ingress: { port: 0, sessionSecret: "${options.name}-${randomUUID()}"${options.ingress ? `, ${options.ingress}` : ''} }
${options.config(simUrl)}`);
  return {
    broker,
    sim,
    simUrl,
    namespace,
    configPath,
    ingress: (name) => startRole(name, ['ingress', '--config', configPath]),
    worker: (name, pool) => startRole(name, ['worker', '--pool', pool, '--config', configPath]),
    stop: async () => {
      await sim.stop();
      await broker.dispose();
    },
  };
}

/** A {@link startConformanceCluster}: its ingress URLs, first the one the suite talks to. */
export interface ConformanceCluster {
  /** `/mcp` URL of each ingress replica. */
  readonly urls: string[];
  /** Stops every role, then the sim and the broker. */
  stop(): Promise<void>;
}

/**
 * The `conformance` pool across processes on NATS JetStream: `ingresses` ingress replicas sharing
 * one session secret and one worker of the pool, the sim as its endpoint (it only answers the
 * worker's health probe). `catalog` (YAML: resources, prompts) and `ingress` (more ingress settings,
 * see {@link SimClusterOptions.ingress}) go into the config.
 */
export async function startConformanceCluster(options: {
  name: string;
  ingresses: number;
  catalog?: string;
  ingress?: string;
}): Promise<ConformanceCluster> {
  const cluster = await startSimCluster({
    name: options.name,
    startBroker: startNatsServer,
    sim: {},
    ...(options.ingress ? { ingress: options.ingress } : {}),
    config: (simUrl) => `
pools:
  conformance: { backend: conformance, endpoints: [{ url: "${simUrl}", maxConcurrency: 64 }] }
${options.catalog ?? ''}`,
  });
  const roles: RoleProcess[] = [];
  const stop = async () => {
    await Promise.all(roles.map((r) => r.stop()));
    await cluster.stop();
  };
  try {
    for (let i = 0; i < options.ingresses; i++) roles.push(await cluster.ingress(`ingress-${i + 1}`));
    roles.push(await cluster.worker('worker-conformance', 'conformance'));
  } catch (err) {
    await stop();
    throw err;
  }
  return { urls: roles.slice(0, options.ingresses).map((r) => String(r.ready.url)), stop };
}
