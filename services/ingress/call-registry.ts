import { type Context, SpanKind, trace } from '@opentelemetry/api';
import {
  ATTR,
  type CallLogMessage,
  type CallQueue,
  type ChunkReceived,
  ClusterError,
  callAttributes,
  callTracer,
  carrierOf,
  clusterMetrics,
  finalToJson,
  type InputRequest,
  isMcpLogLevel,
  type Logger,
  type MessagingTarget,
  markFailed,
  messagingAttributes,
  messagingTargetOf,
  parseErrorCode,
  type ToolCall,
  type WorkerLink,
} from '../core/index.js';

/** Progress of a running call as the ingress forwards it to the caller. */
export interface CallProgress {
  progress: number;
  total?: number;
  message?: string;
}

/**
 * A worker's `CallToolResult` as JSON text, with the cluster's `_meta` (timing) already in it,
 * so the answer can be written to the caller without parsing it again.
 */
export interface ToolResultText {
  readonly json: string;
  /** The result's `isError`. */
  readonly isError: boolean;
  /** The result is an `InputRequiredResult`: the tool needs the caller's input first. */
  readonly inputRequired?: boolean;
  /**
   * Set by the tool caller on an `InputRequiredResult` it checked and signed (see
   * input-required.ts): what the tool asks for, and its state as the tool wrote it.
   */
  readonly asks?: { requests: Record<string, InputRequest>; state: string | undefined };
}

/**
 * How a call the ingress waited on ended. `withdrawn`: its caller withdrew the request with a
 * 2025-era `notifications/cancelled` (here or, over the bus, at another replica); the work was
 * stopped and, as the MCP spec asks of the receiver of a cancel, the request gets no answer.
 */
export type CallOutcome =
  | { kind: 'result'; result: ToolResultText }
  | { kind: 'error'; error: ClusterError }
  | { kind: 'withdrawn' };

/**
 * What the admission layer (admission/) follows an admitted call with; the registry reports the
 * call's transitions to it. `held`: the call waits at this replica for its tenant's fair share of
 * the pool and must not be enqueued until released.
 */
export interface AdmissionTicket {
  readonly held: boolean;
  /**
   * The call's tenant was under its fair share of the pool: a `normal` call is queued at `high`
   * (callers never ask for `high`), so it waits for a free slot, not behind other tenants' backlogs.
   */
  readonly sparse: boolean;
  /** `enqueue` runs once the held call may go to the broker (at once if it already may). */
  whenReleased(enqueue: () => void): void;
  /** A worker took the call (its first `accepted` chunk). */
  accepted(): void;
  /** The call ended, answered with a result or not; a held call is dropped from its tenant's hold. */
  ended(answered: boolean): void;
}

interface PendingCall {
  call: ToolCall;
  /** The admission's ticket, when the replica admits calls (absent in some unit tests). */
  ticket: AdmissionTicket | undefined;
  /** Set once the call went to the broker (a held call has not). */
  enqueued: boolean;
  /** The worker stream that accepted the call; set once a worker took it. */
  link: WorkerLink | undefined;
  /** Attempt number of the accepting delivery (a redelivery replaces the link). */
  attempt: number;
  /** Id of the worker that accepted the call, for the delivery span. */
  workerId: string;
  /** Set once the broker took the call (its enqueue resolved). */
  queued: boolean;
  cancelKey: string | undefined;
  onProgress: ((p: CallProgress) => void) | undefined;
  onLog: ((message: CallLogMessage) => void) | undefined;
  /** The call's SERVER span as a context, when tracing records it. */
  trace: Context | undefined;
  settle: (outcome: CallOutcome) => void;
  timer: NodeJS.Timeout;
}

/** Unmatched cancels remembered at most (each is a short key and a reason). */
export const EARLY_CANCELS = 10_000;
/** How long an unmatched cancel waits for its call, in ms: longer than a request's trip, far shorter than a session. */
export const EARLY_CANCEL_TTL_MS = 30_000;

/**
 * The calls this ingress replica waits on, keyed by call id. It turns delivery chunks into
 * progress and answers, answers each call exactly once (duplicate finals from redeliveries
 * are acknowledged and ignored), enforces deadlines, and carries cancels to the queue or to
 * the worker running the call.
 */
export class CallRegistry {
  private readonly pending = new Map<string, PendingCall>();
  /** `(session id, request id)` of 2025-era callers → call id, for `notifications/cancelled`. */
  private readonly byCancelKey = new Map<string, string>();
  /**
   * Cancels that matched no call here, by cancel key, oldest first: a 2025-era client sends the
   * `tools/call` and its `notifications/cancelled` as separate HTTP requests, and under load the
   * cancel can arrive first, at this replica or (over the bus) at every other. Kept for
   * {@link EARLY_CANCEL_TTL_MS}, at most {@link EARLY_CANCELS} of them, and applied when the call registers.
   */
  private readonly earlyCancels = new Map<string, { reason: string; source: string; untilMs: number }>();
  private readonly metrics = clusterMetrics();
  private readonly tracer = callTracer();

  /**
   * @param messaging where calls go on the broker, for the PRODUCER span's messaging attributes
   *   (default: the memory broker's names).
   */
  constructor(
    private readonly queue: CallQueue,
    private readonly log: Logger,
    private readonly messaging: MessagingTarget = messagingTargetOf('memory:', ''),
  ) {}

  /** Calls waited on right now. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Enqueues `call` and resolves with its outcome: the worker's result or error, a
   * DEADLINE_EXCEEDED error at `call.deadlineUnixMs`, CANCELLED when `signal` aborts, or
   * `withdrawn` when a cancel for `cancelKey` comes (or came first). No progress is reported once it
   * resolved. Never rejects.
   */
  run(
    call: ToolCall,
    options: {
      signal?: AbortSignal;
      onProgress?: (p: CallProgress) => void;
      /** Called with each log message the worker sends (it sends only those `call.logLevel` admits). */
      onLog?: (message: CallLogMessage) => void;
      cancelKey?: string;
      /** The call's admission; a held call is enqueued when the ticket releases it, if ever. */
      ticket?: AdmissionTicket;
      /**
       * The context of the call's SERVER span, when tracing records it: the enqueue becomes its
       * PRODUCER child (whose context travels in `call.traceContext`), the delivery of the answer
       * another child.
       */
      trace?: Context;
    },
  ): Promise<CallOutcome> {
    return new Promise<CallOutcome>((resolve) => {
      const onAbort = () => this.cancel(call.callId, 'client', 'disconnect');
      const entry: PendingCall = {
        call,
        ticket: options.ticket,
        enqueued: false,
        link: undefined,
        attempt: 0,
        workerId: '',
        queued: false,
        cancelKey: options.cancelKey,
        onProgress: options.onProgress,
        onLog: options.onLog,
        trace: options.trace,
        settle: (outcome) => {
          clearTimeout(entry.timer);
          options.signal?.removeEventListener('abort', onAbort);
          this.pending.delete(call.callId);
          if (entry.cancelKey) this.byCancelKey.delete(entry.cancelKey);
          this.metrics.ingressInFlight.dec();
          entry.ticket?.ended(outcome.kind === 'result');
          resolve(outcome);
        },
        timer: setTimeout(() => this.expire(call.callId), Math.max(0, call.deadlineUnixMs - Date.now())),
      };
      this.pending.set(call.callId, entry);
      this.metrics.ingressInFlight.inc();
      if (options.cancelKey) this.byCancelKey.set(options.cancelKey, call.callId);
      if (options.signal?.aborted) {
        onAbort();
        return;
      }
      const early = options.cancelKey ? this.takeEarlyCancel(options.cancelKey) : undefined;
      if (early) {
        // Its cancel overtook it: never queued, withdrawn at once.
        this.cancel(call.callId, early.reason, early.source, true);
        return;
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (entry.ticket?.held) entry.ticket.whenReleased(() => this.enqueue(entry));
      else this.enqueue(entry);
    });
  }

  /** Puts the call of `entry` on the queue; a failure answers it with QUEUE_UNAVAILABLE. */
  private enqueue(entry: PendingCall): void {
    if (entry.ticket?.sparse && entry.call.priority === 'normal')
      entry.call = { ...entry.call, priority: 'high' };
    const producer = entry.trace ? this.startProducer(entry) : undefined;
    const { call } = entry;
    entry.enqueued = true;
    this.queue.enqueue(call).then(
      () => {
        entry.queued = true;
        producer?.end();
        this.metrics.queueEnqueued.inc({ pool: call.pool, priority: call.priority });
      },
      (err: unknown) => {
        const error =
          err instanceof ClusterError
            ? err
            : new ClusterError('QUEUE_UNAVAILABLE', `could not enqueue the call: ${(err as Error).message}`, {
                cause: err,
              });
        if (producer) {
          markFailed(producer, error.code);
          producer.end();
        }
        this.log.warn('enqueue failed', { callId: call.callId, err: error });
        this.pending.get(call.callId)?.settle({ kind: 'error', error });
      },
    );
  }

  /**
   * Starts the PRODUCER span of the enqueue, a child of the call's SERVER span, and puts its
   * context in the envelope: the worker's CONSUMER span continues from it, across the broker.
   */
  private startProducer(entry: PendingCall) {
    const { call } = entry;
    const producer = this.tracer.startSpan(
      `send ${this.messaging.destinationOf(call.pool, call.priority)}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: { ...messagingAttributes(this.messaging, call, 'send'), ...callAttributes(call) },
      },
      entry.trace,
    );
    if (producer.isRecording() && entry.trace) {
      const carrier = carrierOf(trace.setSpan(entry.trace, producer));
      if (carrier.traceparent) entry.call = { ...call, traceContext: carrier };
    }
    return producer;
  }

  /**
   * The span of the answer's trip from the worker to this replica over the Delivery stream: from
   * when the worker sent the terminal chunk to now, the `delivery` of `_meta["mcp-cluster/timing"]`.
   */
  private traceDelivery(entry: PendingCall, chunk: ChunkReceived, timing: CallTiming): void {
    const now = Date.now();
    const span = this.tracer.startSpan(
      'mcpcluster.v1.Delivery/Connect',
      {
        kind: SpanKind.SERVER,
        startTime: now - timing.deliveryMs,
        attributes: {
          [ATTR.rpcSystem]: 'grpc',
          [ATTR.rpcService]: 'mcpcluster.v1.Delivery',
          [ATTR.rpcMethod]: 'Connect',
          [ATTR.callId]: chunk.callId,
          [ATTR.attempt]: chunk.attempt,
          ...(entry.workerId ? { [ATTR.worker]: entry.workerId } : {}),
          [ATTR.outcome]: chunk.body === 'final' ? 'result' : 'error',
        },
      },
      entry.trace,
    );
    if (chunk.body === 'error') markFailed(span, parseErrorCode(chunk.error?.code ?? ''));
    span.end(now);
  }

  /** Handles one chunk from a worker stream. */
  onChunk(chunk: ChunkReceived, link: WorkerLink): void {
    const entry = this.pending.get(chunk.callId);
    switch (chunk.body) {
      case 'accepted':
        if (!entry) {
          // Nobody waits for this call any more (answered, timed out, cancelled, or this
          // replica restarted): stop the work instead of letting it run to completion.
          link.send({ callId: chunk.callId, cancel: { reason: 'caller gone' } });
          return;
        }
        entry.link = link;
        entry.attempt = chunk.attempt;
        entry.workerId = chunk.accepted?.workerId ?? '';
        entry.ticket?.accepted();
        return;
      case 'progress':
        if (entry?.onProgress && chunk.progress) {
          const p = chunk.progress;
          entry.onProgress({
            progress: p.progress,
            ...(p.total > 0 ? { total: p.total } : {}),
            ...(p.message ? { message: p.message } : {}),
          });
        }
        return;
      case 'log':
        if (entry?.onLog && chunk.log && isMcpLogLevel(chunk.log.level)) {
          const { level, logger, dataJson } = chunk.log;
          let data: unknown;
          try {
            data = JSON.parse(dataJson);
          } catch {
            // A worker sends JSON text; anything else is passed on as the text it is.
            data = dataJson;
          }
          entry.onLog({ level, data, ...(logger ? { logger } : {}) });
        }
        return;
      case 'partial':
        return;
      case 'final':
      case 'error': {
        link.send({ callId: chunk.callId, delivered: { known: entry !== undefined } });
        if (!entry) return;
        const timing = timingOf(chunk.timing);
        if (timing) this.observePhases(entry.call.tool, timing);
        if (timing && entry.trace) this.traceDelivery(entry, chunk, timing);
        if (chunk.body === 'final') {
          const final = chunk.final;
          // The worker's JSON with the timing spliced into its `_meta`: never parsed here.
          const json = final
            ? finalToJson(final, timing ? `"${TIMING_META_KEY}":${JSON.stringify(timing)}` : '')
            : undefined;
          if (final && json !== undefined) {
            entry.settle({
              kind: 'result',
              result: final.inputRequired
                ? { json, isError: false, inputRequired: true }
                : { json, isError: final.isError },
            });
          } else
            entry.settle({
              kind: 'error',
              error: new ClusterError('INTERNAL', 'the worker sent a result that is not a CallToolResult'),
            });
        } else {
          const code = parseErrorCode(chunk.error?.code ?? '');
          entry.settle({ kind: 'error', error: new ClusterError(code, chunk.error?.message || code) });
        }
        return;
      }
      default:
        this.log.warn('delivery chunk without body', { callId: chunk.callId });
    }
  }

  /**
   * Records where an answered call's time went. The phases do not overlap: the worker's backend
   * time includes the micro-batch wait, which is taken out of the `backend` phase here, so
   * queue + batch + backend + delivery is the call's time from enqueue to answer, less the
   * worker's own overhead.
   */
  private observePhases(tool: string, timing: CallTiming): void {
    const phase = (name: string, ms: number) =>
      this.metrics.callPhase.observe({ tool, phase: name }, Math.max(0, ms) / 1000);
    phase('queue', timing.queueWaitMs);
    phase('batch', timing.batchWaitMs);
    phase('backend', timing.backendMs - timing.batchWaitMs);
    phase('delivery', timing.deliveryMs);
  }

  /** A worker stream closed: calls it ran will be redelivered to another worker by the queue. */
  onLinkClosed(link: WorkerLink): void {
    for (const entry of this.pending.values()) if (entry.link === link) entry.link = undefined;
  }

  /**
   * Cancels a call this replica owns: removes it from the queue when still waiting, or orders
   * the worker that runs it to abort the backend request. Resolves the caller with CANCELLED, or
   * (`withdrawn`) with the outcome that writes no answer.
   */
  cancel(callId: string, reason: string, source: string, withdrawn = false): boolean {
    const entry = this.pending.get(callId);
    if (!entry) return false;
    this.metrics.ingressCancels.inc({ source });
    this.stopWork(entry, reason);
    entry.settle(
      withdrawn
        ? { kind: 'withdrawn' }
        : { kind: 'error', error: new ClusterError('CANCELLED', `the call was cancelled (${reason})`) },
    );
    return true;
  }

  /**
   * Withdraws the call a 2025-era caller identified by `(session id, request id)` with
   * `notifications/cancelled`: its work stops and its request gets no answer. False if the call is
   * not here (the cancel is then remembered for a call still on its way).
   */
  cancelByKey(cancelKey: string, reason: string, source: string): boolean {
    const callId = this.byCancelKey.get(cancelKey);
    if (callId) return this.cancel(callId, reason, source, true);
    this.earlyCancels.delete(cancelKey);
    if (this.earlyCancels.size >= EARLY_CANCELS)
      this.earlyCancels.delete(this.earlyCancels.keys().next().value as string);
    this.earlyCancels.set(cancelKey, { reason, source, untilMs: Date.now() + EARLY_CANCEL_TTL_MS });
    return false;
  }

  /** The remembered cancel of `cancelKey`, if one came within its time to live (then forgotten). */
  private takeEarlyCancel(cancelKey: string): { reason: string; source: string } | undefined {
    if (this.earlyCancels.size === 0) return undefined;
    const early = this.earlyCancels.get(cancelKey);
    if (!early) return undefined;
    this.earlyCancels.delete(cancelKey);
    return early.untilMs > Date.now() ? early : undefined;
  }

  private expire(callId: string): void {
    const entry = this.pending.get(callId);
    if (!entry) return;
    this.metrics.ingressCancels.inc({ source: 'deadline' });
    this.stopWork(entry, 'deadline');
    const waitedMs = Date.now() - entry.call.enqueuedUnixMs;
    const where = entry.link
      ? 'while running'
      : entry.enqueued
        ? 'while queued (no worker took it in time)'
        : `while held at the ingress behind its tenant's fair share of pool ${entry.call.pool} (never queued)`;
    entry.settle({
      kind: 'error',
      error: new ClusterError(
        'DEADLINE_EXCEEDED',
        `the call did not finish within its deadline (${waitedMs} ms, ${where}); retry later or with a longer deadline`,
      ),
    });
  }

  private stopWork(entry: PendingCall, reason: string): void {
    const { callId, pool } = entry.call;
    if (entry.link && !entry.link.closed) {
      entry.link.send({ callId, cancel: { reason } });
      return;
    }
    // Held at this replica: never reached the broker, nothing to remove there.
    if (!entry.enqueued) return;
    // Not taken yet: remove it from the queue. If a worker takes it meanwhile, its `accepted`
    // chunk finds no pending entry and is answered with a cancel.
    this.queue
      .cancel(callId, pool)
      .catch((err: unknown) => this.log.warn('queue cancel failed', { callId, err }));
  }

  /**
   * The broker lost its data (see `CallQueue.onDataLost`): answers at once, with a retryable
   * QUEUE_UNAVAILABLE, every call that was queued and that no worker has accepted, instead of
   * letting its caller wait for the deadline of a call that no longer exists. Calls a worker
   * accepted are still running and will be answered; calls whose enqueue is still under way
   * went to the broker as it is now. Returns how many calls were failed.
   */
  failQueued(reason: string): number {
    let failed = 0;
    for (const entry of [...this.pending.values()]) {
      if (!entry.queued || entry.link) continue;
      failed += 1;
      entry.settle({
        kind: 'error',
        error: new ClusterError(
          'QUEUE_UNAVAILABLE',
          `the broker lost this queued call before a worker took it (${reason}); retry the call`,
        ),
      });
    }
    return failed;
  }

  /** Settles every call with SHUTTING_DOWN (used when the grace period ran out). */
  abortAll(): void {
    for (const entry of [...this.pending.values()]) {
      this.stopWork(entry, 'shutdown');
      entry.settle({
        kind: 'error',
        error: new ClusterError('SHUTTING_DOWN', 'the ingress replica is shutting down; retry the call'),
      });
    }
  }
}

/** `_meta` key of the per-call time breakdown the cluster adds to every result, in milliseconds. */
export const TIMING_META_KEY = 'mcp-cluster/timing';

/**
 * Where a call spent its time, in milliseconds: queue wait, micro-batch wait, backend time (which
 * includes the batch wait) and delivery from the worker back to this replica.
 */
interface CallTiming {
  queueWaitMs: number;
  batchWaitMs: number;
  backendMs: number;
  deliveryMs: number;
}

/** The timing a worker sent with a final or error chunk, with the delivery time measured here. */
function timingOf(timing: ChunkReceived['timing']): CallTiming | undefined {
  if (!timing) return undefined;
  return {
    queueWaitMs: round(timing.queueWaitMs),
    batchWaitMs: round(timing.batchWaitMs),
    backendMs: round(timing.backendMs),
    // Wall clocks of two hosts: a worker clock ahead of this one would give a negative time.
    deliveryMs: timing.sentUnixMs > 0 ? Math.max(0, Date.now() - timing.sentUnixMs) : 0,
  };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
