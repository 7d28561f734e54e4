import type { BenchAuth } from './auth.js';
import { startClusterDistributed, startClusterMemory } from './cluster.js';
import { builtFile, type ChildRole, jsonLine, serverNodeArgs, spawnRole } from './process.js';

/**
 * The systems under test of the serving-layer comparison: the same two tools (`generate_text`,
 * `embed`) against the same backend, served five ways, each as its own OS processes so memory
 * and CPU are measured alike.
 *
 * - `direct`: one process, MCP SDK v2 stateless handler (legacy support on), the tools call the
 *   backend themselves with the cluster workers' adapters (embed forwarded per call).
 * - `peer`: one process, FastMCP (Streamable HTTP, stateless), the same adapters.
 * - `cluster-memory`: `mcp-cluster up`, one process: ingress, memory queue, both pools.
 * - `cluster-nats`, `cluster-bullmq`: a broker process, `ingresses` ingress processes and
 *   `workers` worker processes per pool.
 */
export type SystemName = 'direct' | 'peer' | 'cluster-memory' | 'cluster-nats' | 'cluster-bullmq';

export const SYSTEM_NAMES: readonly SystemName[] = [
  'direct',
  'peer',
  'cluster-memory',
  'cluster-nats',
  'cluster-bullmq',
];

export interface SystemOptions {
  /** A running simulated vLLM (chat completions + embeddings), started by the scenario. */
  backendUrl: string;
  /** Cluster: worker processes per pool (default 1). */
  workers?: number;
  /** Cluster: ingress replicas (default 1; the load generator targets the first URL). */
  ingresses?: number;
  /**
   * Cluster: the embedding result cache. Default false, since direct and peer have none and a
   * load generator that repeats texts would otherwise measure the cache, not the serving layer.
   */
  embedCache?: boolean;
  /**
   * Cluster: calls one inference worker holds (and its backend endpoint admits). Default 4096;
   * more is served by listing the backend several times (4096 each). A call beyond it waits in
   * the queue.
   */
  inferenceInFlight?: number;
  /** Start timeout of each process, in milliseconds. Default 30 s. */
  startTimeoutMs?: number;
  /** cluster-memory: authenticate callers (see auth.ts); the load sends `auth.headers`. */
  auth?: BenchAuth;
  /** Cluster: more configuration sections (YAML), e.g. `batch: { directory: ... }`. */
  configYaml?: string;
  /** Cluster: the embed tool's `batch.backgroundPause` (e.g. `0ms`); default the tool's own. */
  embedBackgroundPause?: string;
  /** Cluster: more settings of the inference pool, YAML lines (e.g. `fairQueue: { size: 64 }`). */
  inferencePoolYaml?: string[];
}

export interface SystemUnderTest {
  name: SystemName;
  /** MCP endpoint (http://127.0.0.1:<port>/mcp). */
  url: string;
  /** Every ingress URL (cluster); [url] otherwise. */
  urls: string[];
  /** Every OS process of the system (server, ingress, workers, broker) for memory sampling. */
  pids: number[];
  /**
   * The newest MCP revision the system serves. Every system also serves the 2025 revisions
   * (initialize + Mcp-Session-Id); a v2 client pinned to 2026-07-28 works against each whose
   * value is `2026-07-28`.
   */
  protocol: '2026-07-28' | '2025-11-25';
  /** Milliseconds from the call of startSystem until the system answered ready. */
  startupMs: number;
  /** Stops every process it started, bounded (at most ~10 s), never hangs, never rejects. */
  stop(): Promise<void>;
}

const DIRECT_ENTRY = builtFile('bench/systems/direct-server.js');
const PEER_ENTRY = builtFile('bench/systems/peer-server.js');
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_BOUND_MS = 15_000;

/** Starts one system under test against `options.backendUrl`; rejects (with the child's stderr) on failure. */
export async function startSystem(name: SystemName, options: SystemOptions): Promise<SystemUnderTest> {
  const started = performance.now();
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  if (!/^https?:\/\//.test(options.backendUrl)) {
    throw new Error(`startSystem: backendUrl must be an http(s) URL, got "${options.backendUrl}"`);
  }
  let running: { urls: string[]; pids: number[]; stop(): Promise<void> };
  let protocol: SystemUnderTest['protocol'] = '2026-07-28';
  switch (name) {
    case 'direct':
    case 'peer': {
      if (options.auth) throw new Error(`startSystem: ${name} has no authentication to measure`);
      const role: ChildRole<Record<string, unknown>> = await spawnRole({
        name,
        command: process.execPath,
        args: [
          ...serverNodeArgs(),
          name === 'direct' ? DIRECT_ENTRY : PEER_ENTRY,
          '--port',
          '0',
          '--backend',
          options.backendUrl,
          '--exit-with-stdin',
        ],
        ready: jsonLine,
        timeoutMs,
        stdinPipe: true,
      });
      running = { urls: [String(role.ready.url)], pids: [role.pid], stop: () => role.stop(3000) };
      break;
    }
    case 'cluster-memory':
    case 'cluster-nats':
    case 'cluster-bullmq': {
      const cluster = {
        backendUrl: options.backendUrl,
        workers: positive(options.workers ?? 1, 'workers'),
        ingresses: positive(options.ingresses ?? 1, 'ingresses'),
        embedCache: options.embedCache === true,
        inferenceInFlight: options.inferenceInFlight,
        timeoutMs,
        auth: options.auth,
        configYaml: options.configYaml,
        embedBackgroundPause: options.embedBackgroundPause,
        inferencePoolYaml: options.inferencePoolYaml,
      };
      running =
        name === 'cluster-memory'
          ? await startClusterMemory(cluster)
          : await startClusterDistributed(name === 'cluster-nats' ? 'nats' : 'redis', cluster);
      break;
    }
    default:
      throw new Error(`startSystem: unknown system "${name as string}"; one of ${SYSTEM_NAMES.join(', ')}`);
  }
  if (name === 'peer') protocol = PEER_PROTOCOL;
  let stopping: Promise<void> | undefined;
  return {
    name,
    url: running.urls[0] as string,
    urls: running.urls,
    pids: running.pids,
    protocol,
    startupMs: Math.round(performance.now() - started),
    stop() {
      stopping ??= Promise.race([
        running.stop().catch(() => undefined),
        new Promise<void>((resolve) => setTimeout(resolve, STOP_BOUND_MS).unref()),
      ]);
      return stopping;
    },
  };
}

/**
 * FastMCP 4.20.16 builds its servers with the 1.x MCP SDK: mcp-proxy's 2026-07-28 leg answers
 * `server/discover` with "server_missing_modern_protocol_support", so only 2025-era clients
 * (initialize, negotiated 2025-11-25) can call it.
 */
const PEER_PROTOCOL: SystemUnderTest['protocol'] = '2025-11-25';

function positive(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`startSystem: ${what} must be a positive integer, got ${n}`);
  return n;
}
