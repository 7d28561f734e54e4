// Waiting in tests: for a state that an event does not announce (a sim's counters, a queue's stats,
// a role's /metrics, a process that is gone), poll it; never sleep a fixed time for it.

/** First pause between two probes, in milliseconds; it grows to {@link MAX_POLL_MS}. */
const FIRST_POLL_MS = 5;
/** Longest pause between two probes, in milliseconds (a probe may be an HTTP request). */
const MAX_POLL_MS = 50;

/**
 * Waits until `probe` returns a truthy value and resolves with it. Polls at once, then after 5 ms,
 * the pause growing by half each time up to 50 ms, so a state reached at once is seen at once and
 * a slow one (a role restarting) costs few probes. An error `probe` throws counts as "not yet"
 * (connection refused while a process starts); the timeout error names `what` (a function is
 * asked at the timeout, so it can show the last state seen) and that error. Default timeout 10 s.
 */
export async function waitFor<T>(
  what: string | (() => string),
  probe: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let pause = FIRST_POLL_MS;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) {
      const reason =
        last === undefined ? '' : `; last error: ${last instanceof Error ? last.message : String(last)}`;
      const described = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}${reason}`);
    }
    await sleep(pause);
    pause = Math.min(MAX_POLL_MS, Math.ceil(pause * 1.5));
  }
}

/**
 * Resolves after `ms` milliseconds. Only for time that is the subject of a test (a quiet period
 * in which nothing may happen, a clock that must move); to wait for something, use `waitFor`.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
