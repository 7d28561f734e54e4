import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery, type QueuedCall } from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';
import { open2025Session, post2025 } from './support/mcp-clients.js';
import { waitFor } from './support/wait.js';

// A 2025-era client sends `tools/call` and its `notifications/cancelled` as separate requests; under
// load the cancel can arrive first, at the replica that will get the call or at another one. Two
// replicas share a memory queue; a spy consumer records what reaches the queue.
describe('a cancel that overtakes its call', () => {
  let broker: Broker;
  const replicas: Ingress[] = [];
  const queued: QueuedCall[] = [];
  /** Cancel orders seen on the bus (every replica subscribes to the same bus). */
  const broadcast: string[] = [];

  beforeAll(async () => {
    const config = resolveConfig(`
cluster: { namespace: early-cancel }
ingress: { port: 0, sessionSecret: shared-between-the-replicas }
pools: { embeddings: { backend: openai-embeddings } }
`);
    broker = await openBroker({ url: 'memory:', namespace: 'early-cancel', pools: ['embeddings'] });
    broker.queue.consume('embeddings', { maxInFlight: 100 }, (m) => queued.push(m));
    await broker.cancels.subscribe((order) => broadcast.push(order.requestId));
    replicas.push(await startIngress(config, broker, inProcessDelivery()));
    replicas.push(await startIngress(config, broker, inProcessDelivery()));
  });

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.shutdown()));
    await broker?.close();
  });

  const url = (replica: number) => replicas[replica]?.url as string;
  const post = (replica: number, body: unknown, session: string) => post2025(url(replica), body, session);
  const session = () => open2025Session(url(0), 'early');
  const cancel = (replica: number, sessionId: string, requestId: number) =>
    post(
      replica,
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'early' } },
      sessionId,
    );
  /** The call's JSON-RPC response as text, from JSON or an SSE event; `{}` when there is none. */
  const call = async (replica: number, sessionId: string, id: number) => {
    const res = await post(
      replica,
      {
        jsonrpc: '2.0',
        id,
        method: 'tools/call',
        params: {
          name: 'embed',
          arguments: { texts: [`text ${id}`] },
          _meta: { 'mcp-cluster/timeout-ms': 2000 },
        },
      },
      sessionId,
    );
    const text = await res.text();
    const data = text.startsWith('{') ? text : (/^data: (.*)$/m.exec(text)?.[1] ?? '{}');
    return JSON.stringify(JSON.parse(data));
  };

  it('withdraws the call when it arrives after its cancel, at the same replica, without queueing it', async () => {
    const sessionId = await session();
    expect((await cancel(0, sessionId, 41)).status).toBe(202);
    const started = Date.now();
    // Withdrawn by its caller: the stream ends at once, with no response in it.
    const answer = await call(0, sessionId, 41);
    expect(answer).toBe('{}');
    expect(Date.now() - started).toBeLessThan(1500);
    expect(queued.filter((m) => m.call.argumentsJson.toString().includes('text 41'))).toEqual([]);
  });

  it('withdraws it at another replica too: the cancel went over the bus and waited there', async () => {
    const sessionId = await session();
    expect((await cancel(0, sessionId, 42)).status).toBe(202);
    // The bus delivers to every subscriber alike: once the test's own has it, so has the other replica.
    await waitFor('the cancel on the bus', () => broadcast.includes('42'));
    const answer = await call(1, sessionId, 42);
    expect(answer).toBe('{}');
    expect(queued.filter((m) => m.call.argumentsJson.toString().includes('text 42'))).toEqual([]);
  });

  it('leaves other requests of the session alone', async () => {
    const sessionId = await session();
    await cancel(0, sessionId, 43);
    const answer = await call(0, sessionId, 44);
    // Queued (no worker answers here), then the deadline, not a cancel.
    expect(answer).toContain('DEADLINE_EXCEEDED');
    await waitFor('call 44 queued', () =>
      queued.some((m) => m.call.argumentsJson.toString().includes('text 44')),
    );
  });
});
