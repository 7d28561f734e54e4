import { createHash } from 'node:crypto';

/** What the router sees of one backend actor. */
export interface BackendView {
  /** Stable identity of the endpoint (its URL); affinity hashes on it. */
  id: string;
  /** Requests running on it now. */
  inFlight: number;
  /** Requests it can run at once. */
  maxConcurrency: number;
  /** Health probe passes and its circuit breaker lets calls through. */
  available: boolean;
}

/**
 * Load above the pool's average that an affinity choice may carry before the call spills to
 * the next backend in the key's order ("consistent hashing with bounded loads", c = 1.25).
 */
export const AFFINITY_LOAD_FACTOR = 1.25;

/**
 * Picks the backend for a call: with a session key, the first backend in the key's rendezvous
 * order whose load stays within the bound (so a conversation's turns reuse one backend's KV
 * cache while it is healthy and not overloaded); otherwise, or when none qualifies, the
 * available backend with the least outstanding work relative to its size. Returns the index
 * into `backends`, or `undefined` when every backend is unavailable or full.
 */
export function pickBackend(backends: readonly BackendView[], sessionKey: string): number | undefined {
  let open = 0;
  let available = 0;
  let total = 0;
  for (const b of backends) {
    if (!b.available) continue;
    available += 1;
    total += b.inFlight;
    if (b.inFlight < b.maxConcurrency) open += 1;
  }
  if (open === 0) return undefined;

  if (sessionKey) {
    const bound = Math.ceil(((total + 1) / available) * AFFINITY_LOAD_FACTOR);
    // Each available backend hashed once, then tried in the key's order.
    const ranked: { index: number; score: number }[] = [];
    backends.forEach((b, index) => {
      if (b.available) ranked.push({ index, score: score(sessionKey, b.id) });
    });
    ranked.sort(byScore);
    for (const { index } of ranked) {
      const b = backends[index] as BackendView;
      // The preferred backend is full or over the bound: try the key's next choice.
      if (b.inFlight < b.maxConcurrency && b.inFlight + 1 <= bound) return index;
    }
  }

  let best: number | undefined;
  let bestLoad = Number.POSITIVE_INFINITY;
  backends.forEach((b, i) => {
    if (!b.available || b.inFlight >= b.maxConcurrency) return;
    const load = b.inFlight / b.maxConcurrency;
    if (load < bestLoad) {
      best = i;
      bestLoad = load;
    }
  });
  return best;
}

/** Backend ids in the order a session key prefers them (highest rendezvous weight first). */
export function rendezvousOrder(ids: readonly string[], sessionKey: string): string[] {
  return ids
    .map((id) => ({ id, score: score(sessionKey, id) }))
    .sort(byScore)
    .map((r) => r.id);
}

/** Highest score first; equal scores keep their order (the sort is stable). */
function byScore(a: { score: number }, b: { score: number }): number {
  return b.score - a.score;
}

function score(key: string, id: string): number {
  return createHash('sha1').update(key).update('\u0000').update(id).digest().readUInt32BE(0);
}
