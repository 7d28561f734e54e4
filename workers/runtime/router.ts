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
  const open: number[] = [];
  let total = 0;
  backends.forEach((b, i) => {
    if (b.available && b.inFlight < b.maxConcurrency) open.push(i);
    if (b.available) total += b.inFlight;
  });
  if (open.length === 0) return undefined;

  if (sessionKey) {
    const availableCount = backends.filter((b) => b.available).length;
    const bound = Math.ceil(((total + 1) / availableCount) * AFFINITY_LOAD_FACTOR);
    for (const id of rendezvousOrder(
      backends.filter((b) => b.available).map((b) => b.id),
      sessionKey,
    )) {
      const index = open.find((i) => backends[i]?.id === id);
      // The preferred backend is full or over the bound: try the key's next choice.
      if (index !== undefined && (backends[index]?.inFlight ?? 0) + 1 <= bound) return index;
    }
  }

  let best: number | undefined;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (const i of open) {
    const b = backends[i];
    if (!b) continue;
    const load = b.inFlight / b.maxConcurrency;
    if (load < bestLoad) {
      best = i;
      bestLoad = load;
    }
  }
  return best;
}

/** Backend ids in the order a session key prefers them (highest rendezvous weight first). */
export function rendezvousOrder(ids: readonly string[], sessionKey: string): string[] {
  return [...ids].sort((a, b) => score(sessionKey, b) - score(sessionKey, a));
}

function score(key: string, id: string): number {
  return createHash('sha1').update(key).update('\u0000').update(id).digest().readUInt32BE(0);
}
