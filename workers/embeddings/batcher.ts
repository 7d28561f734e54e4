/**
 * Micro-batching of embedding texts across calls. Calls that arrive close together for the same
 * endpoint, tool, model and normalisation are merged into one backend request; each caller gets
 * back exactly its own vectors, in order.
 */

import { type Context, context, type Link, type Span, SpanKind, trace } from '@opentelemetry/api';
import {
  ATTR,
  ClusterError,
  callTracer,
  callTracingOn,
  markFailed,
  toClusterError,
} from '../../services/core/index.js';
import { type BatchPolicy, closeReason, estimateTokens, fits, type OpenBatchState } from './batch-policy.js';

/** Sends one backend request for `texts` and resolves with one vector per text, in order. */
export type SendBatch = (texts: string[], signal: AbortSignal) => Promise<number[][]>;

/**
 * Backend requests in flight to one endpoint, shared by every batcher that sends there. A small
 * limit (2 by default in the adapter) keeps the GPU busy — one batch runs while the next already
 * waits in the backend's queue, so the GPU never idles for a round trip — while later texts keep
 * collecting in the open batch instead of queueing inside the backend as many small requests.
 */
export class BatchSlots {
  #used = 0;
  /** When an interactive batcher last took or waited for a slot (performance.now() ms). */
  #urgentAtMs = Number.NEGATIVE_INFINITY;
  /** When a background batch last took a slot. */
  #backgroundAtMs = Number.NEGATIVE_INFINITY;
  #backgroundTimer: NodeJS.Timeout | undefined;
  // Sets keep arrival order; a woken batcher that still waits re-registers at the end (round robin).
  // Interactive batchers are woken before background (batch-job) ones: a freed slot goes to an
  // interactive batch first, so batch chunks fill the GPU only with what interactive calls leave.
  readonly #waiting = new Set<() => void>();
  readonly #background = new Set<() => void>();

  /**
   * @param limit backend requests in flight to the endpoint at once.
   * @param backgroundPauseMs while interactive batches are about, the least time between two
   *   background batches, in ms (0: none; see the embed tool's `batch.backgroundPause`).
   */
  constructor(
    readonly limit: number,
    readonly backgroundPauseMs = 0,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get used(): number {
    return this.#used;
  }

  /**
   * Takes a slot if there is room. While interactive batches have come by within
   * {@link URGENT_RECENT_MS}, background batches leave one slot free for them (an interactive
   * batch then waits only for the batch the backend runs, not also one queued behind it) and go
   * at most one per `backgroundPauseMs`: the backend cannot stop a batch once started, so the
   * share of time it spends on batch work is the chance an interactive call waits for one.
   */
  tryTake(background = false): boolean {
    const now = this.now();
    if (!background) this.#urgentAtMs = now;
    else if (now - this.#urgentAtMs < URGENT_RECENT_MS) {
      if (this.limit > 1 && this.#used >= this.limit - 1) return false;
      const due = this.#backgroundAtMs + this.backgroundPauseMs;
      if (now < due) {
        this.#wakeBackgroundAt(due - now);
        return false;
      }
    }
    if (this.#used >= this.limit) return false;
    this.#used += 1;
    if (background) this.#backgroundAtMs = now;
    return true;
  }

  give(): void {
    this.#used -= 1;
    for (const waiting of [this.#waiting, this.#background]) {
      for (const wake of [...waiting]) {
        if (this.#used >= this.limit) return;
        waiting.delete(wake);
        wake();
      }
    }
  }

  /** Waits for a slot; `background` waiters are woken only when no interactive one waits. */
  wait(wake: () => void, background = false): void {
    if (!background) this.#urgentAtMs = this.now();
    (background ? this.#background : this.#waiting).add(wake);
  }

  leave(wake: () => void): void {
    this.#waiting.delete(wake);
    this.#background.delete(wake);
  }

  /** Wakes the background waiters once their pause is over (they try again, and wait again if refused). */
  #wakeBackgroundAt(ms: number): void {
    if (this.#backgroundTimer) return;
    this.#backgroundTimer = setTimeout(
      () => {
        this.#backgroundTimer = undefined;
        for (const wake of [...this.#background]) {
          this.#background.delete(wake);
          wake();
        }
      },
      Math.max(1, Math.ceil(ms)),
    );
    this.#backgroundTimer.unref();
  }
}

/** How long after an interactive batch background batches keep a slot free for the next, in ms. */
export const URGENT_RECENT_MS = 1000;

/** Settings of one batcher. */
export interface MicroBatcherOptions {
  policy: BatchPolicy;
  send: SendBatch;
  /** The endpoint's shared in-flight limit. */
  slots: BatchSlots;
  /**
   * Called as each backend request is sent, with its distinct texts and the calls whose texts it
   * carries (a call spread over several requests counts in each).
   */
  onSend?: (texts: number, calls: number) => void;
  /**
   * Whether a failure of a batch that mixes several calls should be retried call by call: a
   * refusal caused by one caller's input (a text too long for the model) must not fail the
   * other callers of the batch. Failures of the backend itself fail every call of the batch.
   */
  isolate?: (err: ClusterError) => boolean;
  /** Called when the batcher holds nothing any more (no open, queued or running batch). */
  onIdle?: () => void;
  /** Batch-job texts: this batcher waits behind interactive ones for the endpoint's slots. Default false. */
  background?: boolean;
  /** Clock in milliseconds; default `performance.now`. */
  now?: () => number;
}

interface PendingCall {
  vectors: number[][];
  remaining: number;
  settled: boolean;
  /** Unsent and running batches that hold texts of this call. */
  batches: Set<Batch>;
  resolve(vectors: number[][]): void;
  reject(err: ClusterError): void;
  unlisten(): void;
  /** Called once, when the first batch holding a text of this call is sent. */
  onFirstDispatch: (() => void) | undefined;
  /** The context the call was submitted in (its backend span), when tracing is on. */
  trace: Context | undefined;
}

interface Item {
  call: PendingCall;
  /** Position of the text in its call. */
  position: number;
  text: string;
}

class Batch implements OpenBatchState {
  readonly items: Item[] = [];
  /** Distinct texts and how many items carry each: a text is sent once per batch. */
  readonly counts = new Map<string, number>();
  tokens = 0;
  /** Set by the wait timer (the first text has waited `maxWaitMs`) or the idle tick. */
  waitOver = false;
  /** Whether the idle tick (send soon: the backend has nothing running) is scheduled. */
  idleTickScheduled = false;
  timer: NodeJS.Timeout | undefined;
  /** Set when the batch was sent. */
  abort: AbortController | undefined;
  /** A retry of one call's share of a failed batch: its failure is that call's alone. */
  isolated = false;

  constructor(readonly firstArrivalMs: number) {}

  get texts(): number {
    return this.counts.size;
  }

  add(item: Item): void {
    this.items.push(item);
    const count = this.counts.get(item.text) ?? 0;
    if (count === 0) this.tokens += estimateTokens(item.text);
    this.counts.set(item.text, count + 1);
  }

  /** Removes a call's texts (it left before the batch was sent). */
  removeCall(call: PendingCall): void {
    for (let i = this.items.length - 1; i >= 0; i--) {
      const item = this.items[i] as Item;
      if (item.call !== call) continue;
      this.items.splice(i, 1);
      const count = (this.counts.get(item.text) ?? 1) - 1;
      if (count === 0) {
        this.counts.delete(item.text);
        this.tokens -= estimateTokens(item.text);
      } else {
        this.counts.set(item.text, count);
      }
    }
  }

  liveCalls(): PendingCall[] {
    return [...new Set(this.items.map((item) => item.call))].filter((call) => !call.settled);
  }
}

const cancelled = () => new ClusterError('CANCELLED', 'the call was cancelled');

/**
 * The span of one batched backend request, when tracing records the calls: a CLIENT span in the
 * trace of the batch's first call, linked to the backend span of every call whose texts it carries
 * (a batch serves many traces; links, not parents, tie it to the others). Undefined when off.
 */
function batchSpan(calls: readonly PendingCall[], texts: number): Span | undefined {
  if (!callTracingOn()) return undefined;
  const links: Link[] = [];
  for (const call of calls) {
    const span = call.trace ? trace.getSpan(call.trace) : undefined;
    if (span?.isRecording()) links.push({ context: span.spanContext() });
  }
  const first = calls[0];
  if (links.length === 0 || !first) return undefined;
  return callTracer().startSpan(
    'embeddings batch',
    {
      kind: SpanKind.CLIENT,
      links,
      attributes: { [ATTR.batchCalls]: calls.length, [ATTR.batchTexts]: texts },
    },
    first.trace,
  );
}

/**
 * Merges texts of concurrent calls into backend requests. A batch closes when it holds
 * `maxSize` distinct texts or `maxTokens` estimated tokens, or once its first text waited
 * `maxWaitMs` (see batch-policy.ts); a call with more texts than fit is spread over several
 * batches. Batches go out while the endpoint's `BatchSlots` has room; while it has none, the
 * open batch keeps growing up to its limits, so batches get larger exactly when the GPU is busy. A call whose signal aborts leaves unsent batches at once (its texts are never sent); its
 * share of a batch already sent is dropped, and a sent batch no caller waits for any more is
 * aborted. A failed request fails every call in it with the same ClusterError.
 */
export class MicroBatcher {
  #open: Batch | undefined;
  /** Closed batches waiting for a slot, oldest first. */
  readonly #ready: Batch[] = [];
  readonly #running = new Set<Batch>();
  readonly #now: () => number;
  readonly #wake = () => this.#pump();

  constructor(private readonly options: MicroBatcherOptions) {
    this.#now = options.now ?? (() => performance.now());
  }

  /** Texts waiting to be sent (open and closed batches), backend requests running. */
  get stats(): { waitingTexts: number; queuedBatches: number; running: number } {
    const openTexts = this.#open?.texts ?? 0;
    return {
      waitingTexts: openTexts + this.#ready.reduce((sum, b) => sum + b.texts, 0),
      queuedBatches: this.#ready.length,
      running: this.#running.size,
    };
  }

  /** Whether the batcher holds nothing. */
  get idle(): boolean {
    return this.#open === undefined && this.#ready.length === 0 && this.#running.size === 0;
  }

  /**
   * Embeds `texts` as part of whatever batches they fall into. Resolves with one vector per
   * text in order; rejects with the batch's ClusterError, or CANCELLED when `signal` aborts.
   */
  submit(texts: readonly string[], signal?: AbortSignal, onFirstDispatch?: () => void): Promise<number[][]> {
    if (signal?.aborted) return Promise.reject(cancelled());
    if (texts.length === 0) return Promise.resolve([]);
    return new Promise<number[][]>((resolve, reject) => {
      const call: PendingCall = {
        vectors: new Array<number[]>(texts.length),
        remaining: texts.length,
        settled: false,
        batches: new Set(),
        resolve,
        reject,
        unlisten: () => {},
        onFirstDispatch,
        trace: callTracingOn() ? context.active() : undefined,
      };
      if (signal) {
        const onAbort = () => this.#fail(call, cancelled());
        signal.addEventListener('abort', onAbort, { once: true });
        call.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      texts.forEach((text, position) => {
        this.#add({ call, position, text });
      });
      this.#pump();
    });
  }

  #add(item: Item): void {
    const { policy } = this.options;
    let batch = this.#open;
    if (batch && !batch.counts.has(item.text) && !fits(policy, batch, estimateTokens(item.text))) {
      this.#closeOpen();
      batch = undefined;
    }
    if (!batch) batch = this.#openBatch();
    batch.add(item);
    item.call.batches.add(batch);
    // Full batches close at once; the wait rule is applied by #pump, after the whole call was
    // added, so with maxWait 0 a call's texts still travel together.
    const reason = closeReason({ ...policy, maxWaitMs: Number.POSITIVE_INFINITY }, batch, this.#now());
    if (reason) this.#closeOpen();
  }

  #openBatch(): Batch {
    const batch = new Batch(this.#now());
    const { maxWaitMs } = this.options.policy;
    if (maxWaitMs > 0) {
      batch.timer = setTimeout(() => {
        batch.timer = undefined;
        batch.waitOver = true;
        this.#pump();
      }, maxWaitMs);
    } else {
      batch.waitOver = true;
    }
    this.#open = batch;
    return batch;
  }

  #closeOpen(): void {
    const batch = this.#open;
    if (!batch) return;
    this.#open = undefined;
    this.#ready.push(batch);
  }

  /** Sends what is due while the endpoint has room. */
  #pump(): void {
    for (;;) {
      // Closed batches are full (or a failed batch's per-call retries); the open one is due once
      // its wait is over, and goes partly filled.
      let next = this.#ready[0];
      if (!next) {
        const open = this.#open;
        if (open) {
          const reason = closeReason(this.options.policy, open, this.#now(), this.#running.size > 0);
          if (open.waitOver || (reason !== undefined && reason !== 'idle')) {
            next = open;
          } else if (reason === 'idle' && !open.idleTickScheduled) {
            // Nothing is running: send after this turn of the event loop, so calls that arrive
            // together still share the request, instead of after the full maxWait.
            open.idleTickScheduled = true;
            setImmediate(() => {
              open.waitOver = true;
              this.#pump();
            });
          }
        }
      }
      if (!next) break;
      if (!this.options.slots.tryTake(this.options.background === true)) {
        this.options.slots.wait(this.#wake, this.options.background === true);
        return;
      }
      if (next === this.#open) this.#open = undefined;
      else this.#ready.shift();
      this.#dispatch(next);
    }
    this.#checkIdle();
  }

  #dispatch(batch: Batch): void {
    clearTimeout(batch.timer);
    batch.timer = undefined;
    batch.abort = new AbortController();
    const texts = [...batch.counts.keys()];
    for (const item of batch.items) {
      const first = item.call.onFirstDispatch;
      item.call.onFirstDispatch = undefined;
      first?.();
    }
    this.#running.add(batch);
    this.options.onSend?.(texts.length, batch.liveCalls().length);
    const span = batchSpan(batch.liveCalls(), texts.length);
    const signal = batch.abort.signal;
    let outcome: Promise<number[][]>;
    try {
      // The request carries the batch span's traceparent (see backendRequest).
      outcome = span
        ? context.with(trace.setSpan(context.active(), span), () => this.options.send(texts, signal))
        : this.options.send(texts, signal);
    } catch (err) {
      outcome = Promise.reject(err);
    }
    if (span) {
      outcome.then(
        () => span.end(),
        (err: unknown) => {
          markFailed(span, toClusterError(err).code);
          span.end();
        },
      );
    }
    outcome
      .then(
        (vectors) => {
          this.#finish(batch);
          if (vectors.length !== texts.length) {
            throw new ClusterError(
              'BACKEND_PROTOCOL',
              `the backend returned ${vectors.length} embeddings for ${texts.length} texts`,
            );
          }
          const index = new Map(texts.map((text, i) => [text, i]));
          for (const item of batch.items) {
            this.#deliver(item, vectors[index.get(item.text) ?? -1] as number[]);
          }
        },
        (err: unknown) => {
          this.#finish(batch);
          throw err;
        },
      )
      .catch((err: unknown) => this.#failed(batch, toClusterError(err)))
      .finally(() => {
        this.options.slots.give();
        this.#pump();
      });
  }

  /** The batch is no longer running: its calls stop pointing at it. */
  #finish(batch: Batch): void {
    if (!this.#running.delete(batch)) return;
    for (const item of batch.items) item.call.batches.delete(batch);
  }

  #deliver(item: Item, vector: number[]): void {
    const { call } = item;
    if (call.settled) return;
    call.vectors[item.position] = vector;
    call.remaining -= 1;
    if (call.remaining === 0) {
      call.settled = true;
      call.unlisten();
      call.resolve(call.vectors);
    }
  }

  #failed(batch: Batch, err: ClusterError): void {
    const live = batch.liveCalls();
    if (!batch.isolated && live.length > 1 && this.options.isolate?.(err)) {
      // Each call's share goes again on its own, ahead of newer work; only the culprit fails.
      const solos = live.map((call) => {
        const solo = new Batch(this.#now());
        solo.isolated = true;
        solo.waitOver = true;
        for (const item of batch.items) if (item.call === call) solo.add(item);
        call.batches.add(solo);
        return solo;
      });
      this.#ready.unshift(...solos);
      return;
    }
    for (const call of live) this.#fail(call, err);
  }

  /** Settles a call with an error and takes its texts out of every batch not yet answered. */
  #fail(call: PendingCall, err: ClusterError): void {
    if (call.settled) return;
    call.settled = true;
    call.unlisten();
    for (const batch of call.batches) {
      if (batch.abort) {
        // Sent: drop this call's share; abort the request when nobody waits for it any more.
        if (batch.liveCalls().length === 0) batch.abort.abort(err);
      } else {
        batch.removeCall(call);
        if (batch.texts === 0) this.#drop(batch);
      }
    }
    call.batches.clear();
    call.reject(err);
    this.#checkIdle();
  }

  /** Forgets an unsent batch that lost all its texts. */
  #drop(batch: Batch): void {
    clearTimeout(batch.timer);
    batch.timer = undefined;
    if (this.#open === batch) this.#open = undefined;
    const at = this.#ready.indexOf(batch);
    if (at >= 0) this.#ready.splice(at, 1);
  }

  #checkIdle(): void {
    if (!this.idle) return;
    this.options.slots.leave(this.#wake);
    this.options.onIdle?.();
  }
}
