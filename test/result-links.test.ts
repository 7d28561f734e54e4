import {
  Client as ClientV2,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, openMemoryJobStore } from '../services/core/index.js';
import { ResultLinks } from '../services/ingress/index.js';
import { CONFORMANCE_PNG, CONFORMANCE_WAV } from '../workers/conformance/index.js';
import { type ConformanceCluster, startConformanceCluster } from './support/cluster.js';
import { waitFor } from './support/wait.js';

// Large result media as resource links, across processes on NATS JetStream: two ingress replicas
// with `ingress.resultLinks` on (items of 100 bytes and more, 3 s), a worker of the `conformance`
// pool. The fixtures' WAV (124 bytes) is linked and read back at the other replica; the PNG
// (70 bytes) stays inline; other tenants, bad ids and expired items read as not found.

const tenant = (name: string) => ({ requestInit: { headers: { 'mcp-cluster-tenant': name } } });

async function v2(url: string, name: string): Promise<ClientV2> {
  const client = new ClientV2(
    { name: 'links-v2', version: '1.0.0' },
    { versionNegotiation: { mode: { pin: '2026-07-28' } } },
  );
  await client.connect(new TransportV2(new URL(url), tenant(name)));
  return client;
}

async function v1(url: string, name: string): Promise<ClientV1> {
  const client = new ClientV1({ name: 'links-v1', version: '1.0.0' });
  await client.connect(new TransportV1(new URL(url), tenant(name)));
  return client;
}

/** The JSON-RPC code a promise rejects with. */
async function codeOf(promise: Promise<unknown>): Promise<number | undefined> {
  try {
    await promise;
  } catch (err) {
    return (err as { code?: number }).code;
  }
  throw new Error('expected a JSON-RPC error');
}

describe('large result media as resource links (two ingress replicas, NATS JetStream)', () => {
  let cluster: ConformanceCluster;
  let a: string;
  let b: string;

  beforeAll(async () => {
    cluster = await startConformanceCluster({
      name: 'links',
      ingresses: 2,
      ingress: 'resultLinks: { minSize: 100, ttl: 3s }',
    });
    [a, b] = cluster.urls as [string, string];
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('links an item over the size, readable at the other replica by its tenant only, until it expires', async () => {
    const caller = await v2(a, 'acme');
    const reader = await v1(b, 'acme');
    const stranger = await v1(b, 'globex');
    try {
      const result = await caller.callTool({ name: 'test_audio_content', arguments: {} });
      const [link] = result.content as { type: string; uri: string; mimeType: string; size: number }[];
      expect(link).toMatchObject({
        type: 'resource_link',
        mimeType: 'audio/wav',
        size: CONFORMANCE_WAV().length,
      });
      expect(link?.uri).toMatch(/^mcp-cluster:\/\/results\/[A-Za-z0-9_-]{24}$/);
      const uri = String(link?.uri);

      const read = await reader.readResource({ uri });
      expect(read.contents).toEqual([
        { uri, mimeType: 'audio/wav', blob: Buffer.from(CONFORMANCE_WAV()).toString('base64') },
      ]);
      const templates = (await reader.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
      expect(templates).toContain('mcp-cluster://results/{id}');

      expect(await codeOf(stranger.readResource({ uri }))).toBe(-32602);
      for (const bad of ['mcp-cluster://results/nope', 'mcp-cluster://results/../../x', `${uri}x`]) {
        expect(await codeOf(reader.readResource({ uri: bad }))).toBe(-32602);
      }
      // Gone once its time is up (3 s here), at every replica.
      await waitFor(
        'the linked item to expire',
        async () => (await codeOf(reader.readResource({ uri }))) === -32602,
        10_000,
      );
    } finally {
      await Promise.all([caller.close(), reader.close(), stranger.close()]);
    }
  });

  it('keeps items under the size inline, byte for byte', async () => {
    const caller = await v1(a, 'acme');
    try {
      const result = await caller.callTool({ name: 'test_multiple_content_types', arguments: {} });
      const image = (result.content as { type: string; data?: string }[]).find((c) => c.type === 'image');
      expect(image?.data).toBe(Buffer.from(CONFORMANCE_PNG()).toString('base64'));
    } finally {
      await caller.close();
    }
  });
});

describe('ResultLinks sweep', () => {
  it('deletes what is past its time and keeps the rest', async () => {
    const store = openMemoryJobStore();
    const links = new ResultLinks(store, 10, 60_000, createLogger('links-test'));
    const media = (bytes: number) =>
      JSON.stringify({
        content: [{ type: 'image', data: Buffer.alloc(bytes, 7).toString('base64'), mimeType: 'image/png' }],
      });
    const small = media(5);
    expect(await links.linkLarge(small, 'acme', 'draw')).toBe(small);
    const linked = JSON.parse(await links.linkLarge(media(50), 'acme', 'draw')) as {
      content: { uri: string }[];
    };
    expect(linked.content[0]?.uri).toMatch(/^mcp-cluster:\/\/results\//);
    expect(await store.keys('result.')).toHaveLength(1);
    expect(await links.sweep(Date.now())).toBe(0);
    expect(await links.sweep(Date.now() + 61_000)).toBe(1);
    expect(await store.keys('result.')).toHaveLength(0);
    expect(await store.blobNames('result.')).toHaveLength(0);
    await store.close();
  });
});
