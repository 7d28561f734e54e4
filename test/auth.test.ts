import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  ClusterError,
  clusterMetrics,
  inProcessDelivery,
  type QueuedCall,
} from '../services/core/index.js';
import {
  createApiKey,
  type Ingress,
  keysFileEntry,
  type NewApiKey,
  parseKeysFile,
  startIngress,
} from '../services/ingress/index.js';
import { encodeToolCall } from '../services/protobuf/index.js';
import { freePort } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import {
  type AuthorizationServer,
  signToken,
  startAuthorizationServer,
  unsignedToken,
} from './support/oidc.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { waitFor } from './support/wait.js';

/** The keys file's text for `keys`. */
const keysFileOf = (keys: NewApiKey[]) =>
  keys.length === 0 ? 'keys: []\n' : `keys:\n${keys.map((k) => keysFileEntry(k.entry)).join('\n')}\n`;

// An ingress that authenticates with OAuth (tokens from a real OpenID provider) and API keys,
// on a memory queue. A spy consumer on every pool records what reaches the queue: calls carry
// the verified identity and never the credential. Every way a credential can be wrong is tried.
describe('ingress authentication (oauth + api-keys)', () => {
  let as: AuthorizationServer;
  let broker: Broker;
  let ingress: Ingress;
  let resource = '';
  let keysFile = '';
  let dir = '';
  const queued: QueuedCall[] = [];
  const acmeKey = createApiKey({ tenant: 'acme', scopes: ['mcp', 'pool:embeddings'], name: 'test' });
  const keyToRevoke = createApiKey({ tenant: 'acme', scopes: ['mcp'] });
  const expiredKey = createApiKey({
    tenant: 'acme',
    scopes: ['mcp'],
    expires: new Date(Date.now() - 60_000),
  });
  const noMcpKey = createApiKey({ tenant: 'acme', scopes: ['pool:embeddings'] });
  let agentsToken = '';
  let narrowToken = '';

  beforeAll(async () => {
    as = await startAuthorizationServer({
      clients: [
        { clientId: 'agents', clientSecret: 'agents-secret', scope: 'mcp pool:embeddings', tenant: 'acme' },
        { clientId: 'narrow', clientSecret: 'narrow-secret', scope: 'mcp', tenant: 'globex' },
        { clientId: 'no-tenant', clientSecret: 'no-tenant-secret', scope: 'mcp' },
      ],
    });
    dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-auth-'));
    trackTempDir(dir);
    keysFile = join(dir, 'keys.yaml');
    writeFileSync(keysFile, keysFileOf([acmeKey, keyToRevoke, expiredKey, noMcpKey]));
    const port = await freePort();
    resource = `http://127.0.0.1:${port}/mcp`;
    const config = resolveConfig(`
cluster: { namespace: auth-test }
ingress: { port: ${port} }
auth:
  mode: oauth+api-keys
  resource: "${resource}"
  requiredScopes: [mcp]
  tenants: [acme]
  oauth: { issuer: "${as.issuer}", jwksCooldown: 200ms }
  apiKeys: { file: "${keysFile}", pollInterval: 100ms }
pools:
  inference: { backend: openai-chat }
  embeddings: { backend: openai-embeddings, scopes: [pool:embeddings] }
`);
    broker = await openBroker({ url: 'memory:', namespace: 'auth-test', pools: ['inference', 'embeddings'] });
    for (const pool of ['inference', 'embeddings'])
      broker.queue.consume(pool, { maxInFlight: 100 }, (m) => queued.push(m));
    ingress = await startIngress(config, broker, inProcessDelivery());
    agentsToken = await as.token('agents', { resource });
    narrowToken = await as.token('narrow', { resource });
  }, 30_000);

  afterAll(async () => {
    await ingress?.shutdown();
    await broker?.close();
    await as?.close();
    if (dir) removeTempDir(dir);
  });

  const rpc = (method: string, params: Record<string, unknown> = {}, id = 1) => ({
    jsonrpc: '2.0',
    id,
    method,
    params,
  });
  /** POSTs a 2025-era (stateless) JSON-RPC request with `headers` added. */
  const post = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(resource, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
        ...headers,
      },
      body: JSON.stringify(body),
    });
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  /** The JSON-RPC answer, whether it came as JSON or as one SSE event. */
  const answerOf = async (
    res: Response,
  ): Promise<{ result?: Record<string, unknown>; error?: { message: string } }> => {
    const text = await res.text();
    const data = text.startsWith('{') ? text : (/^data: (.*)$/m.exec(text)?.[1] ?? '{}');
    return JSON.parse(data);
  };
  const toolNames = async (headers: Record<string, string>) => {
    const res = await post(rpc('tools/list'), headers);
    expect(res.status).toBe(200);
    const answer = await answerOf(res);
    return ((answer.result?.tools ?? []) as { name: string }[]).map((t) => t.name).sort();
  };
  /** The refusal's status, OAuth error and challenge. */
  const refusal = async (headers: Record<string, string>) => {
    const res = await post(rpc('tools/list'), headers);
    // An accepted request is answered as MCP (maybe as an SSE stream); a refusal as OAuth error JSON.
    const text = await res.text();
    const body: { error?: string; error_description?: string } = res.ok ? {} : JSON.parse(text);
    return { status: res.status, body, challenge: res.headers.get('www-authenticate') ?? '' };
  };
  const failures = async (reason: string) =>
    (await clusterMetrics().authFailures.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

  it('serves the RFC 9728 metadata at the path-aware and the root location', async () => {
    for (const path of [
      '/.well-known/oauth-protected-resource/mcp',
      '/.well-known/oauth-protected-resource',
    ]) {
      const res = await fetch(new URL(path, resource));
      expect(res.status).toBe(200);
      expect(res.headers.get('access-control-allow-origin')).toBe('*');
      expect(await res.json()).toEqual({
        resource,
        authorization_servers: [as.issuer],
        scopes_supported: ['mcp', 'pool:embeddings'],
        resource_name: 'mcp-cluster',
      });
    }
    expect(
      (await fetch(new URL('/.well-known/oauth-protected-resource', resource), { method: 'POST' })).status,
    ).toBe(405);
  });

  it('answers a request without credentials 401 with a challenge naming the metadata and the base scope', async () => {
    const { status, body, challenge } = await refusal({});
    expect(status).toBe(401);
    expect(body.error).toBe('invalid_token');
    expect(challenge).toContain('Bearer error="invalid_token"');
    expect(challenge).toContain(
      `resource_metadata="${new URL('/.well-known/oauth-protected-resource/mcp', resource)}"`,
    );
    expect(challenge).toContain('scope="mcp"');
    expect(queued).toEqual([]);
  });

  it('lets a valid token in, listing only the tools its scopes allow', async () => {
    expect(await toolNames(bearer(agentsToken))).toEqual(['chat', 'embed', 'generate_text', 'summarize']);
    expect(await toolNames(bearer(narrowToken))).toEqual(['chat', 'generate_text', 'summarize']);
  });

  it('answers a call of a tool whose scope the token lacks 403 insufficient_scope naming every scope needed', async () => {
    const res = await post(
      rpc('tools/call', { name: 'embed', arguments: { texts: ['x'] } }),
      bearer(narrowToken),
    );
    expect(res.status).toBe(403);
    const challenge = res.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challenge).toContain('scope="mcp pool:embeddings"');
    expect(((await res.json()) as { error_description: string }).error_description).toContain(
      'tool embed needs scope pool:embeddings',
    );
    expect(queued).toEqual([]);
  });

  it.each([
    ['garbage', 'not-a-token', 'malformed'],
    ['a JWT-looking string', 'eyJhbGciOiJSUzI1NiJ9.eyJ9.c2ln', 'signature'],
    ['a non-bearer scheme', undefined, 'malformed'],
  ])('refuses %s with 401', async (_label, token, reason) => {
    const before = await failures(reason);
    const headers = token === undefined ? { authorization: `Basic ${btoa('a:b')}` } : bearer(token);
    const { status, body } = await refusal(headers);
    expect(status).toBe(401);
    expect(body.error).toBe('invalid_token');
    expect(await failures(reason)).toBe(before + 1);
  });

  /** A token from the real issuer's key with the claims of a good one, changed by `change`. */
  const forged = async (change: (claims: Record<string, unknown>) => Record<string, unknown>) =>
    as.signToken(change({ ...decodeJwt(agentsToken) }));
  const now = () => Math.floor(Date.now() / 1000);

  it.each([
    [
      'expired',
      (c: Record<string, unknown>) => ({ ...c, iat: now() - 3600, exp: now() - 600 }),
      /token expired/,
    ],
    ['not yet valid', (c: Record<string, unknown>) => ({ ...c, nbf: now() + 3600 }), /not valid yet/],
    [
      'from another issuer',
      (c: Record<string, unknown>) => ({ ...c, iss: 'https://evil.example.com' }),
      /issued by https:\/\/evil/,
    ],
    [
      'for another resource',
      (c: Record<string, unknown>) => ({ ...c, aud: 'https://other.example.com/mcp' }),
      /audience must be/,
    ],
    ['without exp', ({ exp: _exp, ...c }: Record<string, unknown>) => c, /exp/],
    ['without a tenant claim', ({ tenant: _t, ...c }: Record<string, unknown>) => c, /no 'tenant' claim/],
    [
      'with a hostile tenant',
      (c: Record<string, unknown>) => ({ ...c, tenant: 'a"b\\c\nd' }),
      /not a tenant name/,
    ],
  ])('refuses a token %s with 401 saying why', async (_label, change, why) => {
    const { status, body } = await refusal(bearer(await forged(change)));
    expect(status).toBe(401);
    expect(body.error_description).toMatch(why);
  });

  it('refuses a token signed by a key the issuer does not publish, and one without a signature', async () => {
    const claims = decodeJwt(agentsToken);
    const foreign = await refusal(bearer(await signToken(claims)));
    expect(foreign.status).toBe(401);
    expect(foreign.body.error_description).toMatch(/key the issuer does not publish/);
    // A foreign key that names the issuer's key id: the signature does not verify.
    const named = await refusal(bearer(await signToken(claims, { kid: as.signingKid })));
    expect(named.status).toBe(401);
    expect(named.body.error_description).toMatch(/signature does not verify/);
    const none = await refusal(bearer(unsignedToken(claims)));
    expect(none.status).toBe(401);
    // HS256 keyed with the issuer's public key (algorithm confusion).
    const confused = await refusal(bearer(await as.signToken(claims, { alg: 'HS256' })));
    expect(confused.status).toBe(401);
  });

  it('refuses a token without the tenant claim the real issuer minted', async () => {
    const token = await as.token('no-tenant', { resource });
    const { status, body } = await refusal(bearer(token));
    expect(status).toBe(401);
    expect(body.error_description).toContain("no 'tenant' claim");
  });

  it('puts the verified identity on the call, ignores the tenant header, and never queues the credential', async () => {
    queued.length = 0;
    const res = await post(
      rpc('tools/call', {
        name: 'embed',
        arguments: { texts: ['who am i'] },
        _meta: { 'mcp-cluster/timeout-ms': 300 },
      }),
      { ...bearer(agentsToken), 'mcp-cluster-tenant': 'someone-else' },
    );
    // No worker answers: the call times out at the ingress once queued.
    await answerOf(res);
    expect(queued).toHaveLength(1);
    const call = queued[0]?.call;
    expect(call).toMatchObject({
      tool: 'embed',
      tenant: 'acme',
      principal: `${as.issuer}#agents`,
      scopes: ['mcp', 'pool:embeddings'],
    });
    const wire = Buffer.from(encodeToolCall(call as NonNullable<typeof call>)).toString('latin1');
    expect(wire).not.toContain(agentsToken.split('.')[2]);
    expect(wire).not.toContain(agentsToken.split('.')[1]);
  });

  it('binds a 2025-era session id to the principal that opened it', async () => {
    const init = await post(
      rpc('initialize', {
        protocolVersion: '2025-06-18',
        capabilities: {},
        clientInfo: { name: 'auth-test', version: '1' },
      }),
      bearer(agentsToken),
    );
    expect(init.status).toBe(200);
    const session = init.headers.get('mcp-session-id') ?? '';
    expect(session).toMatch(/^s1\./);
    const mine = await post(rpc('tools/list'), { ...bearer(agentsToken), 'mcp-session-id': session });
    expect(mine.status).toBe(200);
    const theirs = await post(rpc('tools/list'), { ...bearer(narrowToken), 'mcp-session-id': session });
    expect(theirs.status).toBe(404);
    // Nor can another principal cancel through it: the cancel is refused before it is matched.
    const cancel = await post(
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1, reason: 'not yours' } },
      { ...bearer(narrowToken), 'mcp-session-id': session },
    );
    expect(cancel.status).toBe(404);
  });

  it('takes API keys as X-API-Key or as a bearer credential, with the key tenant and scopes', async () => {
    expect(await toolNames({ 'x-api-key': acmeKey.key })).toEqual([
      'chat',
      'embed',
      'generate_text',
      'summarize',
    ]);
    expect(await toolNames(bearer(acmeKey.key))).toEqual(['chat', 'embed', 'generate_text', 'summarize']);
    expect(await toolNames({ 'x-api-key': keyToRevoke.key })).toEqual(['chat', 'generate_text', 'summarize']);
  });

  it.each([
    ['an expired key', () => expiredKey.key, /expired at/],
    ['a key with a changed secret', () => `${acmeKey.key.slice(0, -4)}AAAA`, /unknown or revoked API key/],
    ['an unknown key id', () => createApiKey({ tenant: 'acme' }).key, /unknown or revoked/],
    ['a malformed key', () => 'mcpk_zz', /malformed API key/],
  ])('refuses %s with 401', async (_label, key, why) => {
    const { status, body } = await refusal({ 'x-api-key': key() });
    expect(status).toBe(401);
    expect(body.error_description).toMatch(why);
  });

  it('refuses a key without the scope every request needs with 403', async () => {
    const { status, challenge } = await refusal({ 'x-api-key': noMcpKey.key });
    expect(status).toBe(403);
    expect(challenge).toContain('scope="mcp"');
  });

  it('keeps the keys in force when the keys file is broken, and drops a revoked key when it changes', async () => {
    writeFileSync(keysFile, 'keys: [ {id: oops');
    expect(ingress.reloadCredentials()).toBe(false);
    expect((await refusal({ 'x-api-key': keyToRevoke.key })).status).toBe(200);
    writeFileSync(keysFile, keysFileOf([acmeKey, noMcpKey]));
    // The file is polled every 100 ms: no signal needed.
    await waitFor(
      'the revoked key refused',
      async () => (await refusal({ 'x-api-key': keyToRevoke.key })).status === 401,
    );
    expect((await refusal({ 'x-api-key': acmeKey.key })).status).toBe(200);
  });

  it('follows a key rotation at the issuer, rides out a JWKS outage on cached keys, and recovers', async () => {
    const before = decodeJwt(agentsToken);
    await as.rotateKeys();
    const rotated = await as.token('agents', { resource });
    expect(rotated).not.toBe(agentsToken);
    // The new key id is unknown to the cached key set: fetched once (the cooldown is 200 ms).
    await waitFor('the rotated key accepted', async () => (await refusal(bearer(rotated))).status === 200);

    await as.stop();
    // A token never seen before, signed with a key already fetched, still verifies...
    const unseenToken = await as.signToken({ ...decodeJwt(rotated), jti: 'minted-during-the-outage' });
    expect((await refusal(bearer(unseenToken))).status).toBe(200);
    // ...a token naming a key not seen yet cannot be checked: 503 with a retry hint, not 401.
    const unseen = await signToken({ ...before, exp: now() + 600 }, { kid: 'unseen-key' });
    // (Within the 200 ms cooldown after the last fetch the key set is not asked again: 401 meanwhile.)
    const down = await waitFor('a 503 for a key id not seen yet', async () => {
      const res = await post(rpc('tools/list'), bearer(unseen));
      return res.status === 503 ? res : undefined;
    });
    expect(Number(down.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await down.json()) as { error: string }).error).toBe('temporarily_unavailable');
    expect(await failures('keys_unavailable')).toBeGreaterThanOrEqual(1);

    await as.start();
    const afterOutage = await as.rotateKeys();
    const fresh = await as.token('agents', { resource });
    expect(decodeJwt(fresh)).toMatchObject({ iss: as.issuer });
    await waitFor(
      'a token after the outage accepted',
      async () => (await refusal(bearer(fresh))).status === 200,
    );
    expect(afterOutage).not.toBe(before.kid);
    // The unseen key id is now answered as what it is: a key the issuer does not publish.
    expect((await refusal(bearer(unseen))).status).toBe(401);
  });

  it('remembers a verified token no longer than its exp', async () => {
    const shortLived = await forged((c) => ({ ...c, iat: now(), exp: now() + 2 }));
    expect((await refusal(bearer(shortLived))).status).toBe(200);
    // Verified once, answered from memory on the next calls...
    expect((await refusal(bearer(shortLived))).status).toBe(200);
    // ...until it expires: then refused like any expired token.
    const expired = await waitFor('the short-lived token refused', async () => {
      const answer = await refusal(bearer(shortLived));
      return answer.status === 401 ? answer : undefined;
    });
    expect(expired.body.error_description).toMatch(/expired/);
  });

  it('counts refusals by reason', async () => {
    expect(await failures('missing')).toBeGreaterThanOrEqual(1);
    expect(await failures('expired')).toBeGreaterThanOrEqual(2);
    expect(await failures('scope')).toBeGreaterThanOrEqual(2);
    expect(await failures('unknown_key')).toBeGreaterThanOrEqual(2);
  });
});

describe('an ingress without authentication', () => {
  it('refuses to start on a non-loopback address, naming the setting and the opt-out', async () => {
    const broker = await openBroker({ url: 'memory:', namespace: 'auth-none', pools: ['inference'] });
    try {
      const config = resolveConfig(
        'ingress: { host: 0.0.0.0, port: 0 }\npools: { inference: { backend: openai-chat } }\n',
      );
      const err = await startIngress(config, broker, inProcessDelivery()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClusterError);
      expect((err as ClusterError).code).toBe('INVALID_CONFIG');
      expect((err as ClusterError).message).toMatch(/auth\.mode/);
      expect((err as ClusterError).message).toMatch(/auth\.allowUnauthenticated: true/);

      const optedOut = resolveConfig(
        'ingress: { host: 0.0.0.0, port: 0 }\nauth: { allowUnauthenticated: true }\npools: { inference: { backend: openai-chat } }\n',
      );
      const ingress = await startIngress(optedOut, broker, inProcessDelivery());
      await ingress.shutdown();
    } finally {
      await broker.close();
    }
  });

  it('honours the tenant header on loopback (mode none)', async () => {
    const broker = await openBroker({ url: 'memory:', namespace: 'auth-none-2', pools: ['embeddings'] });
    const queued: QueuedCall[] = [];
    broker.queue.consume('embeddings', { maxInFlight: 10 }, (m) => queued.push(m));
    const ingress = await startIngress(
      resolveConfig('ingress: { port: 0 }\npools: { embeddings: { backend: openai-embeddings } }\n'),
      broker,
      inProcessDelivery(),
    );
    try {
      const res = await fetch(ingress.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          'mcp-cluster-tenant': 'team-a',
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name: 'embed', arguments: { texts: ['x'] }, _meta: { 'mcp-cluster/timeout-ms': 200 } },
        }),
      });
      await res.text();
      expect(queued[0]?.call).toMatchObject({ tenant: 'team-a', principal: 'anonymous', scopes: [] });
    } finally {
      await ingress.shutdown();
      await broker.close();
    }
  });
});

describe('the keys file', () => {
  it('round-trips what keys create writes', () => {
    const created = createApiKey({
      tenant: 'acme',
      scopes: ['mcp'],
      expires: new Date('2030-01-01T00:00:00Z'),
      name: 'ci',
    });
    expect(created.key).toMatch(/^mcpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    const parsed = parseKeysFile(`keys:\n${keysFileEntry(created.entry)}\n`, 'keys.yaml');
    expect(parsed.get(created.entry.id)).toEqual(created.entry);
    // Only a hash is stored.
    expect(keysFileEntry(created.entry)).not.toContain(created.key.slice(18));
  });

  it.each([
    ['not YAML', 'keys: [', /not valid YAML/],
    ['an unknown field', 'keys: [{id: 0123456789ab, hash: x, tenant: a, secret: y}]', /keys\.0/],
    ['a bad hash', 'keys: [{id: 0123456789ab, hash: md5:abc, tenant: a}]', /keys\.0\.hash/],
    [
      'a bad expiry',
      'keys: [{id: 0123456789ab, hash: "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", tenant: a, expires: soon}]',
      /keys\.0\.expires/,
    ],
    [
      'a duplicate id',
      `keys:\n${['a', 'b'].map(() => '  - {id: 0123456789ab, hash: "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", tenant: a}').join('\n')}`,
      /appears twice/,
    ],
    ['a list at the top', '- a', /top level|expected object/i],
  ])('refuses %s, naming the entry', (_label, text, why) => {
    expect(() => parseKeysFile(text, 'keys.yaml')).toThrow(why);
  });

  it('accepts an empty file and an empty list', () => {
    expect(parseKeysFile('', 'keys.yaml').size).toBe(0);
    expect(parseKeysFile('keys:\n', 'keys.yaml').size).toBe(0);
  });
});
