/**
 * `npm run bench -- queue [--broker URL] [--calls N] [--concurrency 1,16]`: the queue hop alone.
 * Enqueues calls and measures enqueue → delivery to the handler (the worker acks later, off the
 * caller's path), C at a time, on one broker: a queue change measured without HTTP, MCP or a backend.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { openBroker } from '../services/cli/index.js';
import { encodeArguments, newCallId, type ToolCall } from '../services/core/index.js';
import { runIfMain } from './main.js';

export async function measureQueue(url: string, calls: number, concurrency: number) {
  const namespace = `qlat${process.pid}${Date.now() % 100000}`;
  const broker = await openBroker({ url, namespace, pools: ['p'] });
  const waiting = new Map<string, () => void>();
  const consumer = broker.queue.consume('p', { maxInFlight: Math.max(concurrency, 1) }, (m) => {
    // The caller's wait ends at delivery: a worker acks after the answer went back, off the path.
    waiting.get(m.call.callId)?.();
    void m.ack();
  });
  const histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  const enqueued = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  const one = async () => {
    const call: ToolCall = {
      callId: newCallId(),
      tool: 't',
      pool: 'p',
      argumentsJson: encodeArguments({ prompt: 'a short prompt' }),
      tenant: '',
      sessionKey: '',
      priority: 'normal',
      deadlineUnixMs: Date.now() + 60_000,
      attempt: 1,
      replyTo: '127.0.0.1:1',
      traceContext: {},
      enqueuedUnixMs: Date.now(),
      wantsProgress: false,
      principal: 'anonymous',
      scopes: [],
    };
    const started = performance.now();
    const done = new Promise<void>((resolve) => waiting.set(call.callId, resolve));
    await broker.queue.enqueue(call);
    enqueued.recordValue(Math.round((performance.now() - started) * 1000));
    await done;
    waiting.delete(call.callId);
    histogram.recordValue(Math.round((performance.now() - started) * 1000));
  };
  let left = calls;
  // CPU of this process (enqueue side and consumer side of the hop together) over the measured calls.
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) await one();
    }),
  );
  const seconds = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  await consumer.stop();
  await broker.close();
  const us = (q: number) => histogram.getValueAtPercentile(q) / 1000;
  return {
    calls,
    concurrency,
    perSecond: calls / seconds,
    p50: us(50),
    p99: us(99),
    max: histogram.maxValue / 1000,
    enqueueP50: enqueued.getValueAtPercentile(50) / 1000,
    /** CPU time (user + system) of this process per call, in microseconds. */
    cpuUsPerCall: (cpu.user + cpu.system) / calls,
  };
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { broker: { type: 'string' }, calls: { type: 'string' }, concurrency: { type: 'string' } },
  });
  const url = values.broker ?? 'nats://127.0.0.1:4222';
  for (const c of (values.concurrency ?? '1,16').split(',').map(Number)) {
    const r = await measureQueue(url, Number(values.calls ?? 2000), c);
    process.stdout.write(
      `${url} concurrency ${c}: ${r.perSecond.toFixed(0)} calls/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms (enqueue p50 ${r.enqueueP50.toFixed(2)} ms), CPU ${r.cpuUsPerCall.toFixed(0)} us/call\n`,
    );
  }
  return 0;
}

runIfMain(import.meta.url, 'queue', main);
