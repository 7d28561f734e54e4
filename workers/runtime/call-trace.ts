import { type Context, context, ROOT_CONTEXT, type Span, SpanKind, trace } from '@opentelemetry/api';
import {
  ATTR,
  callAttributes,
  callTracer,
  callTracingOn,
  contextOf,
  type MessagingTarget,
  markFailed,
  messagingAttributes,
  type ToolCall,
} from '../../services/core/index.js';

/**
 * The spans of one delivery (attempt) of a call on a worker, in the trace the ingress started:
 *
 * - `process <destination>` CONSUMER, child of the ingress's PRODUCER span (its context crossed
 *   the broker in `ToolCall.traceContext`); a redelivery is a new CONSUMER span in the same trace
 *   with a higher `mcp_cluster.attempt`.
 * - `queue wait`, from the enqueue to this worker taking the call: `queueWaitMs` of the timing.
 * - `backend <tool>` CLIENT, the adapter's run against the backend (`backendMs`), the
 *   context the adapter's HTTP requests carry in their `traceparent` header; its child
 *   `batch wait` is the part spent waiting for a micro-batch to close (`batchWaitMs`).
 * - `mcpcluster.v1.Delivery/Connect` CLIENT, from sending the terminal chunk to the ingress's word.
 *
 * With tracing off `AttemptTrace.start` hands out one shared instance whose methods return at once.
 */
export class AttemptTrace {
  /** The trace of one delivery of `call`, taken at `takenUnixMs`; a shared inert one when tracing is off. */
  static start(call: ToolCall, target: MessagingTarget, workerId: string, takenUnixMs: number): AttemptTrace {
    return callTracingOn() ? new AttemptTrace(call, target, workerId, takenUnixMs) : AttemptTrace.OFF;
  }

  /** The inert trace of every delivery while tracing is off. */
  private static readonly OFF = new AttemptTrace(undefined);

  private readonly consumer: Span | undefined;
  private readonly on: boolean;
  private readonly ctx: Context;
  private backend: Span | undefined;
  private delivery: Span | undefined;

  private constructor(
    private readonly call: ToolCall | undefined,
    target?: MessagingTarget,
    workerId?: string,
    takenUnixMs?: number,
  ) {
    if (!call || !target) {
      this.on = false;
      this.ctx = ROOT_CONTEXT;
      return;
    }
    const tracer = callTracer();
    const parent = contextOf(call.traceContext);
    this.consumer = tracer.startSpan(
      `process ${target.destinationOf(call.pool, call.priority)}`,
      { kind: SpanKind.CONSUMER, startTime: takenUnixMs },
      parent,
    );
    this.on = this.consumer.isRecording();
    this.ctx = trace.setSpan(parent, this.consumer);
    if (!this.on) return;
    this.consumer.setAttributes({
      ...messagingAttributes(target, call, 'process'),
      ...callAttributes(call),
      [ATTR.attempt]: call.attempt,
      [ATTR.worker]: workerId ?? '',
    });
    tracer
      .startSpan(
        'queue wait',
        { startTime: call.enqueuedUnixMs, attributes: { [ATTR.attempt]: call.attempt } },
        this.ctx,
      )
      .end(Math.max(call.enqueuedUnixMs, takenUnixMs ?? 0));
  }

  /**
   * Runs `work` (the adapter against the backend at `endpointUrl`) inside a CLIENT span, started
   * at `startedMs` (`performance.now()`), so its backend requests carry the span's `traceparent`.
   */
  runBackend<T>(endpointUrl: string, backend: string, startedMs: number, work: () => Promise<T>): Promise<T> {
    if (!this.on || !this.call) return work();
    const url = new URL(endpointUrl);
    this.backend = callTracer().startSpan(
      `backend ${this.call.tool}`,
      {
        kind: SpanKind.CLIENT,
        startTime: startedMs,
        attributes: {
          [ATTR.serverAddress]: url.hostname,
          ...(url.port ? { [ATTR.serverPort]: Number(url.port) } : {}),
          'mcp_cluster.backend': backend,
          [ATTR.attempt]: this.call.attempt,
        },
      },
      this.ctx,
    );
    return context.with(trace.setSpan(this.ctx, this.backend), work);
  }

  /**
   * Ends the backend span at `startedMs + backendMs` (the timing's `backendMs`), with its
   * `batch wait` child when the call waited for a micro-batch.
   */
  endBackend(startedMs: number, backendMs: number, batchWaitMs: number, errorCode: string | undefined): void {
    const span = this.backend;
    if (!span) return;
    this.backend = undefined;
    if (batchWaitMs > 0) {
      callTracer()
        .startSpan('batch wait', { startTime: startedMs }, trace.setSpan(this.ctx, span))
        .end(startedMs + batchWaitMs);
    }
    if (errorCode) markFailed(span, errorCode);
    span.end(startedMs + backendMs);
  }

  /** The terminal chunk is on its way to the ingress at `replyTo`. */
  delivering(replyTo: string): void {
    if (!this.on) return;
    this.delivery = callTracer().startSpan(
      'mcpcluster.v1.Delivery/Connect',
      {
        kind: SpanKind.CLIENT,
        attributes: {
          [ATTR.rpcSystem]: 'grpc',
          [ATTR.rpcService]: 'mcpcluster.v1.Delivery',
          [ATTR.rpcMethod]: 'Connect',
          [ATTR.serverAddress]: replyTo,
        },
      },
      this.ctx,
    );
  }

  /** The ingress answered the terminal chunk (`confirmed`, `unknown`, `lost`, `timeout`). */
  delivered(answer: string): void {
    const span = this.delivery;
    if (!span) return;
    this.delivery = undefined;
    span.setAttribute(ATTR.outcome, answer);
    if (answer === 'lost' || answer === 'timeout')
      markFailed(span, answer === 'lost' ? 'UNDELIVERABLE' : 'TIMEOUT');
    span.end();
  }

  /** Ends the attempt: `outcome` as the worker's metrics count it, `errorCode` when it failed. */
  end(outcome: string, errorCode?: string): void {
    if (!this.on || !this.consumer) return;
    this.delivered('abandoned');
    this.consumer.setAttribute(ATTR.outcome, outcome);
    if (errorCode) markFailed(this.consumer, errorCode);
    this.consumer.end();
  }
}
