import { EventEmitter } from 'node:events';
import { PRIORITIES, type Priority, type ToolCall } from '../envelope.js';
import { clusterMetrics } from '../metrics.js';
import type {
  Broker,
  BrokerOptions,
  CallConsumer,
  CallQueue,
  CancelBus,
  CancelOrder,
  ConsumeOptions,
  QueuedCall,
  QueueStats,
} from './call-queue.js';
import { DEFAULT_ACK_WAIT_MS, DEFAULT_MAX_DELIVERIES } from './call-queue.js';
import { MemoryShareLedger } from './memory-share-ledger.js';
import { consumedPriorities } from './queue-support.js';

interface Entry {
  call: ToolCall;
  deliveries: number;
  queuedAtMs: number;
}

interface PoolState {
  waiting: Record<Priority, Entry[]>;
  inFlight: Map<string, Priority>;
  consumers: MemoryConsumer[];
}

/**
 * The in-process queue: a real implementation of the contract for the embedded single-process
 * mode (`mcp-cluster up`) and unit tests. Nothing survives the process.
 */
export class MemoryCallQueue implements CallQueue {
  readonly kind = 'memory' as const;
  private readonly pools = new Map<string, PoolState>();
  /** Call ids queued or running, for de-duplication. */
  private readonly known = new Set<string>();
  /** Calls that exhausted their deliveries. */
  readonly deadLetters: ToolCall[] = [];
  private closed = false;

  private pool(name: string): PoolState {
    let state = this.pools.get(name);
    if (!state) {
      state = { waiting: { high: [], normal: [], low: [] }, inFlight: new Map(), consumers: [] };
      this.pools.set(name, state);
    }
    return state;
  }

  async enqueue(call: ToolCall): Promise<void> {
    if (this.known.has(call.callId)) return;
    this.known.add(call.callId);
    this.push({ call, deliveries: 0, queuedAtMs: Date.now() });
  }

  private push(entry: Entry): void {
    const state = this.pool(entry.call.pool);
    state.waiting[entry.call.priority].push(entry);
    this.pump(state);
  }

  private pump(state: PoolState): void {
    for (const consumer of state.consumers) {
      while (consumer.hasRoom()) {
        // Only the consumer's own priorities: a consumer for `low` never takes an interactive call,
        // so one that found nothing of its own leaves the rest to the next consumer.
        const entry = takeNext(state, consumer.priorities);
        if (!entry) break;
        consumer.deliver(entry);
      }
    }
  }

  consume(pool: string, options: ConsumeOptions, handler: (message: QueuedCall) => void): CallConsumer {
    const state = this.pool(pool);
    const consumer = new MemoryConsumer(this, state, options, handler);
    state.consumers.push(consumer);
    queueMicrotask(() => this.pump(state));
    return consumer;
  }

  /** @internal settles an entry held by a consumer. */
  settle(
    state: PoolState,
    entry: Entry,
    outcome: 'ack' | 'term' | { redeliverAfterMs: number },
    maxDeliveries: number,
  ): void {
    state.inFlight.delete(entry.call.callId);
    if (outcome === 'ack' || outcome === 'term') {
      this.known.delete(entry.call.callId);
    } else if (entry.deliveries >= maxDeliveries) {
      this.known.delete(entry.call.callId);
      this.deadLetters.push(entry.call);
      clusterMetrics().queueDeadLettered.inc({ pool: entry.call.pool, priority: entry.call.priority });
    } else {
      const requeue = () => {
        if (!this.closed) this.push(entry);
      };
      if (outcome.redeliverAfterMs > 0) setTimeout(requeue, outcome.redeliverAfterMs).unref();
      else requeue();
    }
    if (!this.closed) this.pump(state);
  }

  async cancel(callId: string, pool: string): Promise<boolean> {
    const state = this.pools.get(pool);
    if (!state) return false;
    for (const priority of PRIORITIES) {
      const list = state.waiting[priority];
      const index = list.findIndex((e) => e.call.callId === callId);
      if (index >= 0) {
        list.splice(index, 1);
        this.known.delete(callId);
        return true;
      }
    }
    return false;
  }

  async stats(pool: string): Promise<QueueStats[]> {
    const state = this.pool(pool);
    const now = Date.now();
    return PRIORITIES.map((priority) => {
      const list = state.waiting[priority];
      const first = list[0];
      return {
        pool,
        priority,
        depth: list.length,
        inFlight: [...state.inFlight.values()].filter((p) => p === priority).length,
        oldestAgeMs: first ? now - first.queuedAtMs : 0,
      };
    });
  }

  async ready(): Promise<boolean> {
    return !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const state of this.pools.values()) for (const c of state.consumers) c.stopNow();
  }

  /** @internal */
  markInFlight(state: PoolState, call: ToolCall): void {
    state.inFlight.set(call.callId, call.priority);
  }

  /** @internal */
  removeConsumer(state: PoolState, consumer: MemoryConsumer): void {
    state.consumers = state.consumers.filter((c) => c !== consumer);
  }
}

/** The next waiting entry among `priorities` (highest first), taken off its list. */
function takeNext(state: PoolState, priorities: readonly Priority[]): Entry | undefined {
  for (const priority of priorities) {
    const entry = state.waiting[priority].shift();
    if (entry) return entry;
  }
  return undefined;
}

class MemoryConsumer implements CallConsumer {
  /** The priorities this consumer takes, highest first (`ConsumeOptions.priorities`). */
  readonly priorities: readonly Priority[];
  /** Messages delivered to this consumer and not yet settled: `maxInFlight` bounds it per consumer. */
  private held = 0;
  private stopped = false;
  private readonly ackWaitMs: number;
  private readonly maxDeliveries: number;

  constructor(
    private readonly queue: MemoryCallQueue,
    private readonly state: PoolState,
    private readonly options: ConsumeOptions,
    private readonly handler: (message: QueuedCall) => void,
  ) {
    this.ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.maxDeliveries = options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
    this.priorities = consumedPriorities(options);
  }

  hasRoom(): boolean {
    return !this.stopped && this.held < this.options.maxInFlight;
  }

  deliver(entry: Entry): void {
    entry.deliveries += 1;
    this.held += 1;
    this.queue.markInFlight(this.state, entry.call);
    let settled = false;
    // An unsettled message is redelivered after ackWait, as a broker would.
    let timer = setTimeout(() => settle({ redeliverAfterMs: 0 }), this.ackWaitMs);
    timer.unref();
    const settle = (outcome: 'ack' | 'term' | { redeliverAfterMs: number }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.held -= 1;
      this.queue.settle(this.state, entry, outcome, this.maxDeliveries);
    };
    const message: QueuedCall = {
      call: { ...entry.call, attempt: entry.deliveries },
      ack: async () => settle('ack'),
      nack: async (delayMs = 0) => settle({ redeliverAfterMs: delayMs }),
      term: async () => settle('term'),
      inProgress: async () => {
        if (settled) return;
        clearTimeout(timer);
        timer = setTimeout(() => settle({ redeliverAfterMs: 0 }), this.ackWaitMs);
        timer.unref();
      },
    };
    this.handler(message);
  }

  stopNow(): void {
    this.stopped = true;
    this.queue.removeConsumer(this.state, this);
  }

  async stop(): Promise<void> {
    this.stopNow();
  }
}

/** In-process cancel bus: every subscriber in this process hears every order. */
export class MemoryCancelBus implements CancelBus {
  private readonly events = new EventEmitter();
  async publish(order: CancelOrder): Promise<void> {
    this.events.emit('cancel', order);
  }
  async subscribe(listener: (order: CancelOrder) => void): Promise<() => void> {
    this.events.on('cancel', listener);
    return () => this.events.off('cancel', listener);
  }
  async close(): Promise<void> {
    this.events.removeAllListeners();
  }
}

const brokers = new Map<string, Broker>();

/**
 * Opens the in-process broker. Every caller in one process with the same namespace shares it,
 * which is what lets the embedded mode run ingress and workers side by side (and lets in-process
 * ingress replicas see each other's entries in `shares`, and the ingress the workers' in `roles`).
 */
export function openMemoryBroker(options: BrokerOptions): Broker {
  const existing = brokers.get(options.namespace);
  if (existing) return existing;
  const queue = new MemoryCallQueue();
  const cancels = new MemoryCancelBus();
  const shares = new MemoryShareLedger();
  const roles = new MemoryShareLedger();
  const broker: Broker = {
    url: options.url,
    queue,
    cancels,
    shares,
    roles,
    close: async () => {
      brokers.delete(options.namespace);
      await queue.close();
      await cancels.close();
      shares.clear();
      roles.clear();
    },
  };
  brokers.set(options.namespace, broker);
  return broker;
}
