import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SpawnedBroker, startBrokerServer, uniqueNamespace } from '../../test/support/brokers.js';
import { removeTempDir, trackTempDir } from '../../test/support/process-guard.js';
import type { BenchAuth } from './auth.js';
import { benchConfigYaml } from './config.js';
import { answersOk, type ChildRole, CLI, jsonLine, serverNodeArgs, spawnRole, waitUntil } from './process.js';

// The cluster systems: `mcp-cluster up` (memory queue, one process) and the distributed cluster
// (NATS JetStream or BullMQ on Redis) with each role its own process, all from one temp config.

/** What a started cluster hands back to startSystem. */
export interface StartedCluster {
  urls: string[];
  pids: number[];
  stop(): Promise<void>;
}

/** Settings of a cluster start. */
export interface ClusterStartOptions {
  backendUrl: string;
  workers: number;
  ingresses: number;
  embedCache: boolean;
  inferenceInFlight: number | undefined;
  timeoutMs: number;
  /** Authentication at the ingress (cluster-memory only); default none. */
  auth?: BenchAuth | undefined;
  /** More configuration sections (YAML), e.g. `batch:`. */
  configYaml?: string | undefined;
  /** The embed tool's `batch.backgroundPause`; default the tool's own. */
  embedBackgroundPause?: string | undefined;
  /** More settings of the inference pool (YAML lines), e.g. its fair queue. */
  inferencePoolYaml?: string[] | undefined;
}

/** The banner line of `mcp-cluster up` that names the endpoint. */
const UP_URL = /MCP endpoint \(Streamable HTTP\):\s+(http:\/\/\S+)/;

/** Grace of a SIGTERM stop: the config's drain graces are 2 s. */
const STOP_GRACE_MS = 5000;

function writeTempConfig(yaml: string): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-bench-'));
  trackTempDir(dir);
  const path = join(dir, 'cluster.yaml');
  writeFileSync(path, yaml);
  return { dir, path };
}

/** The ingress's `/readyz` (queue reachable, replica running). */
function readyzOf(mcpUrl: string): string {
  return mcpUrl.replace(/\/mcp$/, '/readyz');
}

/** `mcp-cluster up` with the bench config: ingress, memory queue and both pools in one process. */
export async function startClusterMemory(options: ClusterStartOptions): Promise<StartedCluster> {
  const { dir, path } = writeTempConfig(
    benchConfigYaml({
      backendUrl: options.backendUrl,
      embedCache: options.embedCache,
      ...(options.inferenceInFlight ? { inferenceInFlight: options.inferenceInFlight } : {}),
      extraYaml: [options.auth?.yaml, options.configYaml].filter(Boolean).join('\n'),
      ...(options.embedBackgroundPause ? { embedBackgroundPause: options.embedBackgroundPause } : {}),
      ...(options.inferencePoolYaml ? { inferencePoolYaml: options.inferencePoolYaml } : {}),
    }),
  );
  let role: ChildRole<string> | undefined;
  try {
    role = await spawnRole<string>({
      name: 'cluster-memory (mcp-cluster up)',
      command: process.execPath,
      args: [...serverNodeArgs(), CLI, 'up', '--port', String(options.auth?.port ?? 0), '--config', path],
      ready: (stdout) => UP_URL.exec(stdout)?.[1],
      timeoutMs: options.timeoutMs,
    });
    const started = role;
    await waitUntil(
      `${role.ready} to be ready`,
      () => answersOk(readyzOf(started.ready)),
      options.timeoutMs,
      () => started.stderr(),
    );
  } catch (err) {
    await role?.stop(1000);
    removeTempDir(dir);
    throw err;
  }
  const running = role;
  return {
    urls: [running.ready],
    pids: [running.pid],
    async stop() {
      await running.stop(STOP_GRACE_MS);
      removeTempDir(dir);
    },
  };
}

/**
 * A broker, then `ingresses` ingress replicas and `workers` workers of each pool, each its own
 * process, sharing a fresh namespace and session secret.
 */
export async function startClusterDistributed(
  kind: 'nats' | 'redis',
  options: ClusterStartOptions,
): Promise<StartedCluster> {
  const label = kind === 'nats' ? 'cluster-nats' : 'cluster-bullmq';
  if (options.auth) throw new Error(`${label}: --auth is measured on cluster-memory only`);
  const broker: SpawnedBroker = await startBrokerServer(kind, { readyTimeoutMs: options.timeoutMs });
  const { dir, path } = writeTempConfig(
    benchConfigYaml({
      backendUrl: options.backendUrl,
      brokerUrl: broker.url,
      namespace: uniqueNamespace(kind === 'nats' ? 'bench_nats' : 'bench_bullmq'),
      sessionSecret: randomBytes(16).toString('hex'),
      embedCache: options.embedCache,
      ...(options.inferenceInFlight ? { inferenceInFlight: options.inferenceInFlight } : {}),
      ...(options.configYaml ? { extraYaml: options.configYaml } : {}),
      ...(options.embedBackgroundPause ? { embedBackgroundPause: options.embedBackgroundPause } : {}),
      ...(options.inferencePoolYaml ? { inferencePoolYaml: options.inferencePoolYaml } : {}),
    }),
  );
  const roles: ChildRole<Record<string, unknown>>[] = [];
  const stopAll = async () => {
    await Promise.all(roles.map((r) => r.stop(STOP_GRACE_MS)));
    await broker.dispose();
    removeTempDir(dir);
  };
  const role = (name: string, args: string[]) =>
    spawnRole<Record<string, unknown>>({
      name: `${label} ${name}`,
      command: process.execPath,
      args: [...serverNodeArgs(), CLI, ...args, '--config', path],
      ready: jsonLine,
      timeoutMs: options.timeoutMs,
    }).then((r) => {
      roles.push(r);
      return r;
    });
  try {
    // Ingress replicas first, then the workers (who dial an ingress per call, not at start).
    const ingresses = await allStarted(
      Array.from({ length: options.ingresses }, (_, i) =>
        role(`ingress ${i + 1}`, ['ingress', '--port', '0', '--delivery-port', '0']),
      ),
    );
    const workers = await allStarted(
      ['inference', 'embeddings'].flatMap((pool) =>
        Array.from({ length: options.workers }, (_, i) =>
          role(`worker ${pool} ${i + 1}`, ['worker', '--pool', pool, '--port', '0']),
        ),
      ),
    );
    const urls = ingresses.map((r) => String(r.ready.url));
    const probes = [
      ...urls.map(readyzOf),
      ...workers.map((w) => `http://127.0.0.1:${Number(w.ready.port)}/readyz`),
    ];
    await waitUntil(
      `${label} to be ready (${probes.join(', ')})`,
      async () => (await Promise.all(probes.map((u) => answersOk(u).catch(() => false)))).every(Boolean),
      options.timeoutMs,
      () => roles.map((r) => `${r.name} stderr:\n${r.stderr().slice(-1500)}`).join('\n'),
    );
    return {
      urls,
      pids: [...roles.map((r) => r.pid), broker.pid],
      stop: stopAll,
    };
  } catch (err) {
    await stopAll().catch(() => undefined);
    throw err;
  }
}

/** Like Promise.all, but waits for every start to settle first, so none is left running unseen. */
async function allStarted<T>(starts: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}
