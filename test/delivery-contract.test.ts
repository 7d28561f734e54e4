import { describe, expect, it } from 'vitest';
import {
  type CallSignal,
  type ChunkReceived,
  type DeliveryClient,
  type DeliveryServer,
  type DeliveryTransport,
  inProcessDelivery,
  type ServeOptions,
  type WorkerLink,
} from '../services/core/index.js';
import { grpcDelivery } from '../services/grpc/index.js';
import { cleanupAfterEach, rejection } from './support/adapter-harness.js';
import { waitFor } from './support/wait.js';

// The Delivery contract, run unchanged against every transport: what the ingress (server side)
// and the workers (client side) may rely on, whichever carries the chunks.

const TRANSPORTS: { name: string; make: () => DeliveryTransport }[] = [
  { name: 'in-process', make: inProcessDelivery },
  { name: 'gRPC', make: () => grpcDelivery() },
];

/** Long enough for a loopback connect on a busy machine, short enough to wait out once. */
const CONNECT_TIMEOUT_MS = 500;
/** A final chunk's body: an empty CallToolResult. */
const FINAL = { jsonParts: ['{"content":[]}'], media: [], metaJson: '', isError: false };
const PROGRESS = { progress: 1, total: 0, message: '' };

const cleanups = cleanupAfterEach();

/** A server that records every chunk, the links they came on and the links that closed. */
interface Recorder {
  server: DeliveryServer;
  chunks: ChunkReceived[];
  links: Set<WorkerLink>;
  closed: WorkerLink[];
  chunksOf(callId: string): ChunkReceived[];
}

async function serveRecorder(
  transport: DeliveryTransport,
  options: Partial<ServeOptions> = {},
): Promise<Recorder> {
  const chunks: ChunkReceived[] = [];
  const links = new Set<WorkerLink>();
  const closed: WorkerLink[] = [];
  const server = await transport.serve({
    onChunk: (chunk, link) => {
      chunks.push(chunk);
      links.add(link);
      options.onChunk?.(chunk, link);
    },
    onLinkClosed: (link) => closed.push(link),
    ...(options.listen ? { listen: options.listen } : {}),
  });
  cleanups.push(() => server.close(0));
  return {
    server,
    chunks,
    links,
    closed,
    chunksOf: (id) => chunks.filter((c) => c.callId === id).map(readable),
  };
}

function clientOf(transport: DeliveryTransport): DeliveryClient {
  const client = transport.client({ connectTimeoutMs: CONNECT_TIMEOUT_MS });
  cleanups.push(() => client.close());
  return client;
}

/** Every signal a watcher of `callId` hears. */
/**
 * What a receiver reads off a message, as plain data: its fields and the `body` that names the
 * member that is set. A decoder may keep `body` and unset members on a prototype (protobufjs does);
 * an in-process link hands over plain objects. Both must read the same.
 */
function readable<M extends { body?: string; timing?: unknown }>(message: M): M {
  const out = { ...message, body: message.body } as M;
  if ('timing' in message || 'attempt' in message)
    (out as { timing?: unknown }).timing = message.timing ?? null;
  return out;
}

function record(channel: { watch(callId: string, l: (s: CallSignal) => void): () => void }, callId: string) {
  const signals: CallSignal[] = [];
  const unwatch = channel.watch(callId, (s) =>
    signals.push(s.kind === 'order' ? { kind: 'order', order: readable(s.order) } : s),
  );
  return { signals, unwatch };
}

describe.each(TRANSPORTS)('delivery contract: $name', ({ make }) => {
  it('multiplexes the chunks of many calls on one link, in order per call, decoded in full', async () => {
    const transport = make();
    const ingress = await serveRecorder(transport);
    const client = clientOf(transport);
    const calls = ['call-a', 'call-b', 'call-c'];
    const steps = 25;
    for (let step = 0; step < steps; step++) {
      for (const callId of calls) {
        // Each send asks for the channel again: the same one comes back, not a new link.
        const channel = await client.channel(ingress.server.address);
        expect(channel.address).toBe(ingress.server.address);
        expect(
          channel.send({ callId, attempt: 1, progress: { progress: step, total: 0, message: '' } }),
        ).toBe(true);
      }
    }
    const channel = await client.channel(ingress.server.address);
    channel.send({ callId: 'call-a', attempt: 2, accepted: { workerId: 'w-1' } });
    channel.send({
      callId: 'call-a',
      attempt: 2,
      final: FINAL,
      timing: { queueWaitMs: 1.5, backendMs: 20, batchWaitMs: 0, sentUnixMs: 1_700_000_000_000 },
    });
    channel.send({ callId: 'call-b', attempt: 1, error: { code: 'CANCELLED', message: '' } });

    await waitFor('every chunk', () => ingress.chunks.length === calls.length * steps + 3);
    expect(ingress.links.size).toBe(1);
    for (const callId of calls) {
      const progress = ingress.chunksOf(callId).filter((c) => c.body === 'progress');
      expect(progress.map((c) => c.progress?.progress)).toEqual(Array.from({ length: steps }, (_, i) => i));
    }
    // What the ingress reads: proto3 defaults filled in, `body` naming the field that is set.
    expect(ingress.chunksOf('call-c')[3]).toEqual({
      callId: 'call-c',
      attempt: 1,
      progress: { progress: 3, total: 0, message: '' },
      body: 'progress',
      timing: null,
    });
    expect(ingress.chunksOf('call-a').slice(-2)).toEqual([
      { callId: 'call-a', attempt: 2, accepted: { workerId: 'w-1' }, body: 'accepted', timing: null },
      {
        callId: 'call-a',
        attempt: 2,
        final: FINAL,
        body: 'final',
        timing: { queueWaitMs: 1.5, backendMs: 20, batchWaitMs: 0, sentUnixMs: 1_700_000_000_000 },
      },
    ]);
    expect(ingress.chunksOf('call-b').at(-1)).toEqual({
      callId: 'call-b',
      attempt: 1,
      error: { code: 'CANCELLED', message: '' },
      body: 'error',
      timing: null,
    });
  });

  it('gives each order to the watchers of its call only, until they unsubscribe', async () => {
    const transport = make();
    const ingress = await serveRecorder(transport, {
      onChunk: (chunk, link) => {
        if (chunk.body !== 'final') return;
        if (chunk.callId === 'call-a') link.send({ callId: 'call-a', cancel: { reason: 'client' } });
        else link.send({ callId: chunk.callId, delivered: { known: chunk.callId === 'call-b' } });
      },
    });
    const client = clientOf(transport);
    const channel = await client.channel(ingress.server.address);
    const a = record(channel, 'call-a');
    const b = record(channel, 'call-b');
    const c = record(channel, 'call-c');
    const gone = record(channel, 'call-c');
    gone.unwatch();
    for (const callId of ['call-a', 'call-b', 'call-c']) {
      channel.send({ callId, attempt: 1, final: FINAL });
    }

    await waitFor('the three orders', () => [a, b, c].every((w) => w.signals.length === 1));
    expect(a.signals).toEqual([
      { kind: 'order', order: { callId: 'call-a', cancel: { reason: 'client' }, body: 'cancel' } },
    ]);
    expect(b.signals).toEqual([
      { kind: 'order', order: { callId: 'call-b', delivered: { known: true }, body: 'delivered' } },
    ]);
    // `known: false` is proto3's default value: it must still arrive as a `delivered` order.
    expect(c.signals).toEqual([
      { kind: 'order', order: { callId: 'call-c', delivered: { known: false }, body: 'delivered' } },
    ]);
    expect(gone.signals).toEqual([]);

    // After unsubscribing, a later order for the same call reaches nobody.
    a.unwatch();
    const again = record(channel, 'call-b');
    channel.send({ callId: 'call-a', attempt: 1, final: FINAL });
    channel.send({ callId: 'call-b', attempt: 1, final: FINAL });
    await waitFor('the second order for call-b', () => again.signals.length === 1);
    expect(a.signals).toHaveLength(1);
  });

  it('tells every watcher `lost` once when the server closes, and the server hears the link close', async () => {
    const transport = make();
    const ingress = await serveRecorder(transport);
    const client = clientOf(transport);
    const channel = await client.channel(ingress.server.address);
    const watchers = ['call-a', 'call-b', 'call-b'].map((id) => record(channel, id));
    channel.send({ callId: 'call-a', attempt: 1, accepted: { workerId: 'w-1' } });
    await waitFor('the link to be seen', () => ingress.links.size === 1);

    await ingress.server.close(0);
    await waitFor('every watcher to hear lost', () => watchers.every((w) => w.signals.length > 0));
    for (const w of watchers) expect(w.signals).toEqual([{ kind: 'lost' }]);
    await waitFor('the server to hear the link close', () => ingress.closed.length === 1);
    expect(ingress.closed[0]).toBe([...ingress.links][0]);
    expect(ingress.closed[0]?.closed).toBe(true);
    expect(channel.send({ callId: 'call-a', attempt: 1, progress: PROGRESS })).toBe(false);
    // A watcher added after the break hears it too.
    const late = record(channel, 'call-c');
    await waitFor('the late watcher to hear lost', () => late.signals.length === 1);
    expect(late.signals).toEqual([{ kind: 'lost' }]);
  });

  it('fails with UNDELIVERABLE for an address no server is at', async () => {
    const transport = make();
    const gone = await serveRecorder(transport);
    await gone.server.close(0);
    const client = clientOf(transport);
    const error = await rejection(client.channel(gone.server.address));
    expect(error.code).toBe('UNDELIVERABLE');
    expect(error.message).toContain(gone.server.address);
  });

  it('opens a new link for the next call once the server at that address is back', async () => {
    const transport = make();
    const first = await serveRecorder(transport);
    const client = clientOf(transport);
    const before = await client.channel(first.server.address);
    const lost = record(before, 'call-a');
    await first.server.close(0);
    await waitFor('the old link to be lost', () => lost.signals.length === 1);

    const second = await serveRecorder(transport, { listen: first.server.address });
    expect(second.server.address).toBe(first.server.address);
    const after = await client.channel(first.server.address);
    expect(after).not.toBe(before);
    const order = record(after, 'call-b');
    after.send({ callId: 'call-b', attempt: 2, accepted: { workerId: 'w-1' } });
    await waitFor('the chunk on the new server', () => second.chunks.length === 1);
    expect(first.chunksOf('call-b')).toEqual([]);
    [...second.links][0]?.send({ callId: 'call-b', cancel: { reason: 'deadline' } });
    await waitFor('the order on the new link', () => order.signals.length === 1);
    expect(order.signals[0]).toMatchObject({ kind: 'order', order: { body: 'cancel' } });
  });

  it('ends every link on client close; a server closing with grace waits for that, not for the grace', async () => {
    const transport = make();
    const ingress = await serveRecorder(transport);
    const other = await serveRecorder(transport);
    const client = clientOf(transport);
    const one = await client.channel(ingress.server.address);
    const two = await client.channel(other.server.address);
    const watchers = [record(one, 'call-a'), record(two, 'call-b')];
    one.send({ callId: 'call-a', attempt: 1, accepted: { workerId: 'w-1' } });
    two.send({ callId: 'call-b', attempt: 1, accepted: { workerId: 'w-1' } });
    await waitFor('both links to be seen', () => ingress.links.size === 1 && other.links.size === 1);

    // A grace longer than the test's timeout: only the client's close can let this resolve.
    const closing = ingress.server.close(600_000);
    await client.close();
    await closing;
    await waitFor('both servers to hear their link close', () =>
      [ingress, other].every((r) => r.closed.length === 1),
    );
    for (const w of watchers) expect(w.signals).toEqual([{ kind: 'lost' }]);
    expect(one.send({ callId: 'call-a', attempt: 1, progress: PROGRESS })).toBe(false);
    expect(two.send({ callId: 'call-b', attempt: 1, progress: PROGRESS })).toBe(false);
  });
});
