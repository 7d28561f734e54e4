import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientCredentialsProvider } from '@modelcontextprotocol/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type SpawnedBroker, startNatsServer } from './support/brokers.js';
import { connectClient } from './support/mcp-clients.js';
import { type AuthorizationServer, startAuthorizationServer } from './support/oidc.js';
import { trackTempDir } from './support/process-guard.js';
import { metricValue, type RoleProcess, runCli, startRole, writeConfig } from './support/processes.js';
import { waitFor } from './support/wait.js';

interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

// Identity end to end across separate OS processes on NATS: a real OpenID provider (in the test
// process), an ingress, an embeddings worker and a simulated backend, each its own process. The
// official v2 MCP client finds the authorization server from the cluster's 401 and metadata,
// gets a token with client credentials and calls a tool; a script does the same with an API key
// minted by `mcp-cluster keys create`; neither credential ever reaches the backend.
describe('identity across processes on NATS', () => {
  let broker: SpawnedBroker;
  let as: AuthorizationServer;
  let sim: RoleProcess;
  let ingress: RoleProcess;
  let worker: RoleProcess;
  let resource = '';
  let keysFile = '';
  let apiKey = '';
  let keyEntry = '';
  const credentials: string[] = [];

  /** Mints a key with the CLI and returns the key and the entry it printed. */
  const createKey = async (tenant: string, scopes: string): Promise<{ key: string; entry: string }> => {
    const created = await runCli([
      'keys',
      'create',
      '--tenant',
      tenant,
      '--scopes',
      scopes,
      '--expires',
      '30d',
    ]);
    expect(created.code).toBe(0);
    const key = /^\s+(mcpk_\S+)$/m.exec(created.stdout)?.[1] ?? '';
    expect(key).toMatch(/^mcpk_/);
    // The entry is the indented YAML list item after the instructions, up to the next blank line.
    const lines = created.stdout.split('\n');
    const start = lines.findIndex((line) => line.startsWith('  - id: '));
    const end = lines.indexOf('', start);
    const entry = lines
      .slice(start, end)
      .map((line) => line.slice(2))
      .join('\n');
    expect(entry).toContain(`tenant: ${tenant}`);
    return { key, entry };
  };

  beforeAll(async () => {
    broker = await startNatsServer();
    as = await startAuthorizationServer({
      clients: [
        { clientId: 'agents', clientSecret: 'agents-secret', scope: 'mcp pool:embeddings', tenant: 'acme' },
      ],
    });
    sim = await startRole('sim', ['sim', '--port', '0', '--ttft-ms', '5']);
    const port = await freePort();
    resource = `http://127.0.0.1:${port}/mcp`;
    ({ key: apiKey, entry: keyEntry } = await createKey('batch', 'mcp,pool:embeddings'));
    const keysDir = mkdtempSync(join(tmpdir(), 'mcp-cluster-keys-'));
    trackTempDir(keysDir);
    keysFile = join(keysDir, 'keys.yaml');
    writeFileSync(keysFile, `keys:\n${keyEntry}\n`);
    const configPath = writeConfig(`
cluster: { namespace: auth${randomUUID().slice(0, 8)} }
broker: { url: "${broker.url}" }
ingress: { port: ${port} }
auth:
  mode: oauth+api-keys
  resource: "${resource}"
  requiredScopes: [mcp]
  tenants: [acme, batch]
  oauth: { issuer: "${as.issuer}" }
  # Polled rarely: the test revokes with SIGHUP.
  apiKeys: { file: "${keysFile}", pollInterval: 24h }
pools:
  embeddings:
    backend: openai-embeddings
    scopes: [pool:embeddings]
    endpoints: [{ url: "${String(sim.ready.url)}" }]
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
`);
    [ingress, worker] = await Promise.all([
      startRole('ingress', ['ingress', '--config', configPath]),
      startRole('worker', ['worker', '--pool', 'embeddings', '--config', configPath]),
    ]);
  }, 90_000);

  afterAll(async () => {
    await Promise.all([ingress?.stop(), worker?.stop()]);
    await sim?.stop();
    await as?.close();
    await broker?.stop();
  }, 60_000);

  it('the v2 client discovers the authorization server, gets a token, steps up for a tool scope and calls it', async () => {
    const unauthenticated = await fetch(resource, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: '{}',
    });
    expect(unauthenticated.status).toBe(401);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(
      unauthenticated.headers.get('www-authenticate') ?? '',
    )?.[1];
    expect(metadataUrl).toBe(new URL('/.well-known/oauth-protected-resource/mcp', resource).href);
    const metadata = (await (await fetch(metadataUrl as string)).json()) as {
      authorization_servers: string[];
    };
    expect(metadata.authorization_servers).toEqual([as.issuer]);

    const provider = new ClientCredentialsProvider({
      clientId: 'agents',
      clientSecret: 'agents-secret',
      expectedIssuer: as.issuer,
    });
    const client = await connectClient('v2', resource, { authProvider: provider });
    try {
      // The first token carries what the 401 named (mcp): the tool needing pool:embeddings is hidden...
      expect((await client.listTools()).map((t) => t.name)).toEqual([]);
      // ...and a call to it is answered 403 insufficient_scope, which the client answers with a
      // token for every scope named, then the call goes through.
      const result = await client.callTool('embed', { texts: ['a token found its way'] });
      expect(result.isError).toBeFalsy();
      expect((result.structuredContent as { vectors: number[][] }).vectors).toHaveLength(1);
      expect((await client.listTools()).map((t) => t.name)).toEqual(['embed', 'embed_batch']);
      const token = provider.tokens()?.access_token ?? '';
      expect(token.split('.')).toHaveLength(3);
      credentials.push(token);
    } finally {
      await client.close();
    }
  });

  it('a script calls with an API key from keys create, in the key tenant', async () => {
    const ways: Record<string, string>[] = [{ 'x-api-key': apiKey }, { authorization: `Bearer ${apiKey}` }];
    for (const headers of ways) {
      const client = await connectClient('v1', resource, { headers });
      try {
        expect((await client.listTools()).map((t) => t.name)).toEqual(['embed', 'embed_batch']);
        // Texts differ per call, so that neither is answered from the embeddings cache.
        const result = await client.callTool('embed', {
          texts: ['a key', `sent as ${Object.keys(headers)[0]}`],
        });
        expect(result.isError).toBeFalsy();
      } finally {
        await client.close();
      }
    }
    credentials.push(apiKey);
    const metrics = await (await fetch(new URL('/metrics', resource))).text();
    expect(metricValue(metrics, 'mcp_cluster_ingress_calls_total', { tenant: 'batch', outcome: 'ok' })).toBe(
      2,
    );
    expect(metricValue(metrics, 'mcp_cluster_ingress_calls_total', { tenant: 'acme', outcome: 'ok' })).toBe(
      1,
    );
  });

  it('no credential reaches the backend, nor the worker', async () => {
    expect(credentials).toHaveLength(2);
    const { requests } = (await (await fetch(`${String(sim.ready.url)}/sim/requests`)).json()) as {
      requests: RecordedRequest[];
    };
    const embeds = requests.filter((r) => r.path === '/v1/embeddings');
    expect(embeds.length).toBeGreaterThanOrEqual(3);
    const seen = JSON.stringify(requests);
    for (const credential of credentials) {
      expect(seen).not.toContain(credential);
      // Not even a part of one (a JWT's signature, a key's secret).
      expect(seen).not.toContain(credential.slice(-20));
    }
    expect(
      requests.every((r) => r.headers.authorization === undefined && r.headers['x-api-key'] === undefined),
    ).toBe(true);
    for (const role of [worker, ingress]) {
      const logs = role.logs();
      for (const credential of credentials) expect(logs).not.toContain(credential.slice(-20));
    }
  });

  it('writes one audit line per call and per refusal, without secrets', async () => {
    await fetch(resource, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer mcpk_0123456789ab_wrong' },
      body: '{}',
    });
    const lines = ingress
      .logs()
      .split('\n')
      .filter((l) => l.includes('"audit":true'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const calls = lines.filter((l) => l.msg === 'call');
    expect(calls).toHaveLength(3);
    expect(calls[0]).toMatchObject({
      tenant: 'acme',
      principal: `${as.issuer}#agents`,
      tool: 'embed',
      outcome: 'ok',
    });
    expect(calls[0]?.callId).toMatch(/^[0-9a-f-]{36}$/);
    expect(calls.slice(1).every((l) => l.tenant === 'batch' && String(l.principal).startsWith('key:'))).toBe(
      true,
    );
    const refused = lines.filter((l) => l.msg === 'auth refused');
    expect(refused.some((l) => l.reason === 'missing' && l.remote === '127.0.0.1')).toBe(true);
    expect(refused.some((l) => l.reason === 'scope')).toBe(true);
    expect(refused.some((l) => l.reason === 'malformed')).toBe(true);
    expect(JSON.stringify(refused)).not.toContain('_wrong');
  });

  it('revokes a key on SIGHUP without a restart', async () => {
    const { key: second, entry } = await createKey('batch', 'mcp');
    writeFileSync(keysFile, `keys:\n${keyEntry}\n${entry}\n`);
    const status = async (key: string) =>
      (
        await fetch(resource, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            'mcp-protocol-version': '2025-06-18',
            'x-api-key': key,
          },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
        })
      ).status;
    // Not re-read yet (the file is polled once a day here).
    expect(await status(second)).toBe(401);
    ingress.child.kill('SIGHUP');
    await waitFor('the new key accepted after SIGHUP', async () => (await status(second)) === 200);
    writeFileSync(keysFile, `keys:\n${entry}\n`);
    ingress.child.kill('SIGHUP');
    await waitFor('the first key revoked after SIGHUP', async () => (await status(apiKey)) === 401);
    expect(await status(second)).toBe(200);
    expect(ingress.child.exitCode).toBeNull();
  });
});
