import { type BackendActor, isBreakerRefusal } from './backend-actor.js';
import { pickBackend } from './router.js';

/**
 * Longest a call waiting for a backend goes without looking again, in milliseconds. Actors
 * announce every change that can make them available (`BackendActor.onChange`); this only
 * bounds the cost of one that goes unannounced.
 */
const RECHECK_MS = 1000;

/** How long a call may wait on this worker for a backend, and what stops it waiting. */
export interface BackendWait {
  /** Give up waiting at this time (Unix milliseconds); the work may still start until then. */
  untilUnixMs: number;
  /** Stops the waiting (cancel, deadline, lost caller, shutdown). */
  signal: AbortSignal;
}

/**
 * Runs `work` on the backend the router picks for `sessionKey`, waiting on this worker while
 * none is available (every one down, its breaker open or running its half-open trial, or full)
 * until one is, `wait.untilUnixMs` passes or `wait.signal` aborts. Calls waiting for a breaker's
 * half-open trial thus learn its verdict here: a good trial closes the breaker and they run; none
 * is turned away. A breaker that refuses the call anyway (it opened again between the router's
 * look and the call) sends it back to waiting; any other error of `work` rejects.
 *
 * The router's pick and `work`'s start are one synchronous step (`BackendActor.run` counts the
 * call at once), so calls woken together never overfill a backend.
 *
 * Resolves `{ result }` once the work ran, `undefined` when it gave up without running it.
 */
export async function runWhenAvailable<T>(
  actors: readonly BackendActor[],
  sessionKey: string,
  wait: BackendWait,
  work: (actor: BackendActor) => Promise<T>,
): Promise<{ result: T } | undefined> {
  for (;;) {
    const index = pickBackend(
      actors.map((a) => a.view()),
      sessionKey,
    );
    const actor = index === undefined ? undefined : actors[index];
    if (actor) {
      try {
        return { result: await work(actor) };
      } catch (err) {
        if (!isBreakerRefusal(err)) throw err;
      }
    }
    const leftMs = wait.untilUnixMs - Date.now();
    if (wait.signal.aborted || leftMs <= 0) return undefined;
    await nextChange(actors, Math.min(leftMs, RECHECK_MS), wait.signal);
  }
}

/** Resolves at the next change of any actor, after `timeoutMs`, or when `signal` aborts. */
function nextChange(actors: readonly BackendActor[], timeoutMs: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const removers: (() => void)[] = [];
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      for (const remove of removers) remove();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    signal.addEventListener('abort', done, { once: true });
    for (const actor of actors) removers.push(actor.onChange(done));
  });
}
