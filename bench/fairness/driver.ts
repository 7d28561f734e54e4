/**
 * The tenants of the fairness bench: each a group of agents, every agent its own official MCP
 * client (`@modelcontextprotocol/client`, 2026-07-28) that names its tenant with the
 * `Mcp-Cluster-Tenant` header (auth mode none, loopback), calling `generate_text` on one or more
 * ingress replicas. Every call is recorded (start, end, outcome, tokens asked), so one run can be
 * cut into windows afterwards: latency of the calls that ended in a window, cost served in a
 * window, calls admitted in a window.
 */
import { connectLoadClient, errorKind, type LoadClient } from '../load/clients.js';

/** One tenant's load. */
export interface TenantLoad {
  /** The tenant name sent in `Mcp-Cluster-Tenant` (also the session key, which the sim records as `user`). */
  tenant: string;
  /** Ingress MCP endpoints; agent i uses `urls[i % urls.length]`. */
  urls: string[];
  /** Concurrent agents (MCP client connections). */
  agents: number;
  /** `max_tokens` of every call, or their mean with {@link maxTokensSpread}. */
  maxTokens: number;
  /**
   * Each call's `max_tokens` drawn uniformly from `maxTokens ± maxTokensSpread` (seeded), as agents'
   * generations differ in length. Default 0: every call asks for `maxTokens`.
   */
  maxTokensSpread?: number;
  /** The prompt of every call (its cost counts `prompt.length / 4` tokens). */
  prompt: string;
  /**
   * closed (default): each agent calls, waits for the answer, thinks `thinkMs`, calls again.
   * open: `ratePerSec` calls start per second in total, round-robin over the agents, whether or
   * not earlier calls were answered (a client that gets refused does not slow down).
   */
  mode?: 'closed' | 'open';
  /** Closed loop: pause between an agent's calls, in ms, jittered ±50% (seeded). Default 0. */
  thinkMs?: number;
  /** Open loop: calls started per second over all agents. */
  ratePerSec?: number;
  /** Client-side timeout of a call, in ms. Default 60 s. */
  callTimeoutMs?: number;
}

/** One call as the client saw it; times in ms on `performance.now()`'s clock. */
export interface CallRecord {
  tenant: string;
  /** Index of the ingress URL the call went to. */
  replica: number;
  startMs: number;
  endMs: number;
  /** `ok`, or the failure kind (`http:429`, `rpc:<code>`, `tool_error:<CODE>`, `timeout`, ...). */
  outcome: string;
  maxTokens: number;
  promptChars: number;
  /** The call's queue wait as the cluster reported it (`_meta["mcp-cluster/timing"]`), ms; NaN without one. */
  queueWaitMs: number;
}

/** A running tenant load. */
export interface RunningTenant {
  readonly load: TenantLoad;
  /** Every call that ended so far. */
  readonly records: CallRecord[];
  /** Calls started and not yet ended. */
  inFlight(): number;
  /**
   * Stops starting calls, waits up to `drainMs` for those in flight, then closes every client
   * (which cancels what is left) and resolves.
   */
  stop(drainMs?: number): Promise<void>;
}

const TENANT_HEADER = 'Mcp-Cluster-Tenant';
const SESSION_KEY_HEADER = 'Mcp-Cluster-Session-Key';
/** Agents connecting at once. */
const CONNECT_CONCURRENCY = 32;

/** The estimated cost of a call in tokens, as the cluster counts it: prompt chars / 4 + max_tokens. */
export function callCost(record: Pick<CallRecord, 'maxTokens' | 'promptChars'>): number {
  return Math.ceil(record.promptChars / 4) + record.maxTokens;
}

/** Whether a failure is a refusal at admission (over a limit: HTTP 429 or RATE_LIMITED). */
export function isRateRefusal(outcome: string): boolean {
  return outcome === 'http:429' || outcome.includes('RATE_LIMITED');
}

/** Connects the tenant's agents, then starts calling; resolves once every agent is connected. */
export async function startTenant(load: TenantLoad): Promise<RunningTenant> {
  const timeoutMs = load.callTimeoutMs ?? 60_000;
  const headers = { [TENANT_HEADER]: load.tenant, [SESSION_KEY_HEADER]: load.tenant };
  const clients: LoadClient[] = [];
  for (let i = 0; i < load.agents; i += CONNECT_CONCURRENCY) {
    const batch = Array.from({ length: Math.min(CONNECT_CONCURRENCY, load.agents - i) }, (_, j) =>
      connectLoadClient('v2', urlOf(load, i + j), timeoutMs, false, 20_000, headers),
    );
    clients.push(...(await Promise.all(batch)));
  }
  const records: CallRecord[] = [];
  const spread = Math.max(0, Math.min(load.maxTokensSpread ?? 0, load.maxTokens - 1));
  const lengths = seeded(hash(`${load.tenant}/lengths`));
  let running = true;
  let inFlight = 0;
  const settled = new Set<Promise<void>>();
  const one = (agent: number): Promise<void> => {
    const client = clients[agent] as LoadClient;
    const maxTokens = load.maxTokens - spread + Math.floor(lengths() * (2 * spread + 1));
    const params = { name: 'generate_text', arguments: { prompt: load.prompt, max_tokens: maxTokens } };
    const startMs = performance.now();
    inFlight += 1;
    let queueWaitMs = Number.NaN;
    const done = client
      .call(params)
      .then(
        (result) => {
          const timing = result._meta?.['mcp-cluster/timing'] as { queueWaitMs?: unknown } | undefined;
          if (typeof timing?.queueWaitMs === 'number') queueWaitMs = timing.queueWaitMs;
          return result.isError
            ? `tool_error:${String(result._meta?.['mcp-cluster/error-code'] ?? 'unknown')}`
            : 'ok';
        },
        (err: unknown) => errorKind(err),
      )
      .then((outcome) => {
        inFlight -= 1;
        records.push({
          tenant: load.tenant,
          replica: agent % load.urls.length,
          startMs,
          endMs: performance.now(),
          outcome,
          maxTokens,
          promptChars: load.prompt.length,
          queueWaitMs,
        });
      });
    settled.add(done);
    void done.finally(() => settled.delete(done));
    return done;
  };

  const random = seeded(hash(load.tenant));
  let loops: Promise<void>[];
  if ((load.mode ?? 'closed') === 'closed') {
    const thinkMs = load.thinkMs ?? 0;
    loops = clients.map(async (_, agent) => {
      // Staggered starts, so the agents do not call in lockstep.
      await sleep(random() * Math.max(thinkMs, 20));
      while (running) {
        await one(agent);
        if (thinkMs > 0 && running) await sleep(thinkMs * (0.5 + random()));
      }
    });
  } else {
    const rate = load.ratePerSec ?? 0;
    if (!(rate > 0)) throw new Error(`tenant ${load.tenant}: an open loop needs ratePerSec > 0`);
    loops = [
      (async () => {
        const begin = performance.now();
        for (let n = 0; running; n++) {
          const due = begin + (n * 1000) / rate;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          if (!running) break;
          void one(n % clients.length);
        }
      })(),
    ];
  }

  return {
    load,
    records,
    inFlight: () => inFlight,
    async stop(drainMs = 10_000) {
      running = false;
      await Promise.race([Promise.all([...loops, ...settled]), sleep(drainMs)]);
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
      // Calls cut short by the close still settle (as transport errors); wait for their records.
      await Promise.race([Promise.all([...settled]), sleep(2000)]);
    },
  };
}

function urlOf(load: TenantLoad, agent: number): string {
  return load.urls[agent % load.urls.length] as string;
}

/** Records of `tenant` that ended inside [fromMs, toMs). */
export function endedIn(records: CallRecord[], fromMs: number, toMs: number): CallRecord[] {
  return records.filter((r) => r.endMs >= fromMs && r.endMs < toMs);
}

/** Records that started inside [fromMs, toMs). */
export function startedIn(records: CallRecord[], fromMs: number, toMs: number): CallRecord[] {
  return records.filter((r) => r.startMs >= fromMs && r.startMs < toMs);
}

/**
 * Decode tokens a call generated inside [fromMs, toMs): the simulated backend (batch penalty 0)
 * generates a call's tokens at a fixed pace over the last `serviceMs(maxTokens)` milliseconds
 * before its answer, so the tokens are spread evenly over that span and cut at the window's edges.
 */
export function tokensIn(
  record: CallRecord,
  fromMs: number,
  toMs: number,
  serviceMs: (maxTokens: number) => number,
): number {
  if (record.outcome !== 'ok') return 0;
  const span = Math.max(1, serviceMs(record.maxTokens));
  const begin = record.endMs - span;
  const overlap = Math.max(0, Math.min(toMs, record.endMs) - Math.max(fromMs, begin));
  return (record.maxTokens * overlap) / span;
}

/** Latency percentiles (nearest rank) of the ok calls among `records`, in ms. */
export function latencyOf(records: CallRecord[]): { count: number; p50: number; p95: number; p99: number } {
  const ms = records
    .filter((r) => r.outcome === 'ok')
    .map((r) => r.endMs - r.startMs)
    .sort((a, b) => a - b);
  const at = (q: number) => ms[Math.min(ms.length - 1, Math.max(0, Math.ceil(q * ms.length) - 1))] ?? 0;
  return { count: ms.length, p50: at(0.5), p95: at(0.95), p99: at(0.99) };
}

/** p50 and p95 of the queue wait the cluster reported for the answered calls among `records`, ms. */
export function queueWaitOf(records: CallRecord[]): { p50: number; p95: number } {
  const ms = records
    .filter((r) => r.outcome === 'ok' && Number.isFinite(r.queueWaitMs))
    .map((r) => r.queueWaitMs)
    .sort((a, b) => a - b);
  const at = (q: number) => ms[Math.min(ms.length - 1, Math.max(0, Math.ceil(q * ms.length) - 1))] ?? 0;
  return { p50: at(0.5), p95: at(0.95) };
}

/** Failures by kind among `records`. */
export function failuresOf(records: CallRecord[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of records) if (r.outcome !== 'ok') out[r.outcome] = (out[r.outcome] ?? 0) + 1;
  return out;
}

/** A small seeded generator (xorshift32) returning floats in [0, 1). */
function seeded(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4_294_967_296;
  };
}

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
