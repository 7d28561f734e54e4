// The OIDC test harness (test/support/oidc.ts) against what the cluster's resource-server checks will
// rely on: the flow the MCP client runs (discovery, client credentials with resource and scope), the
// claims of the JWTs, the scope rules, key rotation, an outage of the JWKS, and forged tokens that a
// JWKS-verifying resource server must refuse.

import {
  ClientCredentialsProvider,
  discoverAuthorizationServerMetadata,
  fetchToken,
} from '@modelcontextprotocol/client';
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AuthorizationServer,
  type OidcClient,
  signToken,
  startAuthorizationServer,
  unsignedToken,
} from './support/oidc.js';

/** The cluster's canonical resource URI as a client sends it (no server needs to listen there). */
const RESOURCE = 'http://127.0.0.1:8080/mcp';

const CLIENTS: OidcClient[] = [
  { clientId: 'svc-a', clientSecret: 'secret-a', scope: 'tools:read tools:call', tenant: 'acme' },
  // No tenant; `admin` makes that scope one the AS knows, and svc-a may not have.
  { clientId: 'svc-b', clientSecret: 'secret-b', scope: 'tools:read admin' },
  { clientId: 'svc-none', clientSecret: 'secret-none', scope: '', tenant: 'acme' },
];

/** The error code jose gives a verification failure (`ERR_JWT_EXPIRED`, ...), or the message. */
async function verifyError(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) {
      return err instanceof joseErrors.JWTClaimValidationFailed ? `${err.code} ${err.claim}` : err.code;
    }
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error('the token verified');
}

/** `err.cause.code` of a failed fetch (undici puts the socket error there). */
async function fetchFailure(url: string): Promise<string | undefined> {
  try {
    await fetch(url);
  } catch (err) {
    const cause = err instanceof Error ? (err.cause as { code?: string } | undefined) : undefined;
    return cause?.code;
  }
  throw new Error(`${url} answered`);
}

async function jwksKids(as: AuthorizationServer): Promise<string[]> {
  const jwks = (await (await fetch(as.jwksUri)).json()) as { keys: { kid: string }[] };
  return jwks.keys.map((k) => k.kid);
}

describe('oidc harness', () => {
  let as: AuthorizationServer;
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  beforeAll(async () => {
    as = await startAuthorizationServer({ clients: CLIENTS });
    jwks = createRemoteJWKSet(new URL(as.jwksUri));
  });

  afterAll(async () => {
    await as?.close();
  });

  it('serves the flow the MCP client runs: OpenID discovery, then client credentials with resource', async () => {
    expect(as.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    type Metadata = {
      issuer: string;
      token_endpoint: string;
      jwks_uri: string;
      grant_types_supported: string[];
      token_endpoint_auth_methods_supported: string[];
    };
    // The MCP client asks for RFC 8414 metadata first and OpenID discovery after it: both name the
    // same endpoints, so either path the client takes ends at the same token endpoint and keys.
    const rfc8414 = await fetch(`${as.issuer}/.well-known/oauth-authorization-server`);
    expect(rfc8414.status).toBe(200);
    const oauthMetadata = (await rfc8414.json()) as Metadata;
    const metadata = (await (
      await fetch(`${as.issuer}/.well-known/openid-configuration`)
    ).json()) as Metadata;
    expect(oauthMetadata.issuer).toBe(metadata.issuer);
    expect(oauthMetadata.token_endpoint).toBe(metadata.token_endpoint);
    expect(oauthMetadata.jwks_uri).toBe(metadata.jwks_uri);
    expect(metadata.issuer).toBe(as.issuer);
    expect(metadata.token_endpoint).toBe(as.tokenEndpoint);
    expect(metadata.jwks_uri).toBe(as.jwksUri);
    expect(metadata.grant_types_supported).toContain('client_credentials');
    expect(metadata.token_endpoint_auth_methods_supported).toContain('client_secret_basic');

    // The request as the MCP SDK builds it: Basic auth over the raw id and secret, form body.
    const response = await fetch(metadata.token_endpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${btoa('svc-a:secret-a')}`,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        resource: RESOURCE,
        scope: 'tools:call',
      }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { access_token: string; token_type: string; expires_in: number };
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'tools:call' });

    expect(decodeProtectedHeader(body.access_token)).toEqual({
      alg: 'RS256',
      typ: 'at+jwt',
      kid: as.signingKid,
    });
    const { payload } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(metadata.jwks_uri)), {
      issuer: as.issuer,
      audience: RESOURCE,
      typ: 'at+jwt',
    });
    expect(Object.keys(payload).sort()).toEqual([
      'aud',
      'client_id',
      'exp',
      'iat',
      'iss',
      'jti',
      'scope',
      'sub',
      'tenant',
    ]);
    expect(payload).toMatchObject({
      iss: as.issuer,
      aud: RESOURCE,
      sub: 'svc-a',
      client_id: 'svc-a',
      scope: 'tools:call',
      tenant: 'acme',
    });
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(5);
  });

  it("answers the MCP client SDK's own discovery and token request", async () => {
    const metadata = await discoverAuthorizationServerMetadata(as.issuer);
    expect(metadata?.token_endpoint).toBe(as.tokenEndpoint);
    const client = new ClientCredentialsProvider({
      clientId: 'svc-a',
      clientSecret: 'secret-a',
      expectedIssuer: as.issuer,
      scope: 'tools:read tools:call',
    });
    const tokens = await fetchToken(client, as.issuer, { metadata, resource: new URL(RESOURCE) });
    const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: as.issuer, audience: RESOURCE });
    expect(payload).toMatchObject({ scope: 'tools:read tools:call', tenant: 'acme' });
  });

  it("token() requests the client's whole scope by default; a client without tenant gets no claim", async () => {
    const a = decodeJwt(await as.token('svc-a', { resource: RESOURCE }));
    expect(a).toMatchObject({ scope: 'tools:read tools:call', tenant: 'acme', aud: RESOURCE });
    const b = decodeJwt(await as.token('svc-b', { resource: RESOURCE }));
    expect(b).toMatchObject({ scope: 'tools:read admin', sub: 'svc-b', client_id: 'svc-b' });
    expect(b).not.toHaveProperty('tenant');
    // No scope requested: a token without a `scope` claim.
    expect(decodeJwt(await as.token('svc-a', { resource: RESOURCE, scope: '' }))).not.toHaveProperty('scope');
  });

  it('refuses a known scope the client may not have, and silently drops an unknown one', async () => {
    await expect(as.token('svc-a', { resource: RESOURCE, scope: 'tools:read admin' })).rejects.toThrow(
      /HTTP 400: .*"error":"invalid_scope".*requested scope is not allowed/,
    );
    const dropped = decodeJwt(await as.token('svc-a', { resource: RESOURCE, scope: 'tools:read nope' }));
    expect(dropped.scope).toBe('tools:read');
    expect(decodeJwt(await as.token('svc-a', { resource: RESOURCE, scope: 'nope' }))).not.toHaveProperty(
      'scope',
    );
    // A client registered without scope gets none, known or not.
    const none = decodeJwt(
      await as.token('svc-none', { resource: RESOURCE, scope: 'tools:read admin nope' }),
    );
    expect(none).not.toHaveProperty('scope');
    expect(none.tenant).toBe('acme');
  });

  it('takes the resource as sent for aud; without resource the token is opaque', async () => {
    const origin = 'http://127.0.0.1:8080';
    expect(decodeJwt(await as.token('svc-a', { resource: origin })).aud).toBe(origin);
    expect(decodeJwt(await as.token('svc-a', { resource: `${origin}/` })).aud).toBe(`${origin}/`);
    expect(decodeJwt(await as.token('svc-a', { resource: 'https://mcp.example.com/mcp' })).aud).toBe(
      'https://mcp.example.com/mcp',
    );
    await expect(as.token('svc-a', { resource: 'urn:mcp:cluster' })).rejects.toThrow(/invalid_target/);

    const response = await fetch(as.tokenEndpoint, {
      method: 'POST',
      headers: { authorization: `Basic ${btoa('svc-a:secret-a')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'tools:read' }),
    });
    const { access_token: opaque } = (await response.json()) as { access_token: string };
    expect(opaque.split('.')).toHaveLength(1);
  });

  it('refuses a wrong client secret', async () => {
    const response = await fetch(as.tokenEndpoint, {
      method: 'POST',
      headers: { authorization: `Basic ${btoa('svc-a:wrong')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE }),
    });
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: 'invalid_client' });
  });

  it("signs chosen claims with the issuer's key: each broken claim is what jwtVerify rejects", async () => {
    const real = decodeJwt(await as.token('svc-a', { resource: RESOURCE }));
    const now = Math.floor(Date.now() / 1000);
    const verify = (claims: JWTPayload) =>
      as.signToken(claims).then((t) => jwtVerify(t, jwks, { issuer: as.issuer, audience: RESOURCE }));

    // The control: the real claims, re-signed, verify.
    expect((await verify(real)).payload).toEqual(real);
    expect(decodeProtectedHeader(await as.signToken(real))).toEqual({
      alg: 'RS256',
      typ: 'at+jwt',
      kid: as.signingKid,
    });
    expect(await verifyError(verify({ ...real, exp: now - 60 }))).toBe('ERR_JWT_EXPIRED');
    expect(await verifyError(verify({ ...real, nbf: now + 60 }))).toBe('ERR_JWT_CLAIM_VALIDATION_FAILED nbf');
    expect(await verifyError(verify({ ...real, aud: 'http://127.0.0.1:9999/mcp' }))).toBe(
      'ERR_JWT_CLAIM_VALIDATION_FAILED aud',
    );
    expect(await verifyError(verify({ ...real, iss: 'http://127.0.0.1:1' }))).toBe(
      'ERR_JWT_CLAIM_VALIDATION_FAILED iss',
    );
  });

  it('forges tokens that jwtVerify against the JWKS refuses: foreign key, alg none, HMAC confusion', async () => {
    const real = decodeJwt(await as.token('svc-a', { resource: RESOURCE }));
    const options = { issuer: as.issuer, audience: RESOURCE };

    const foreign = await signToken(real);
    expect(decodeProtectedHeader(foreign)).toEqual({ alg: 'RS256', typ: 'at+jwt', kid: 'foreign-key' });
    expect(await verifyError(jwtVerify(foreign, jwks, options))).toBe('ERR_JWKS_NO_MATCHING_KEY');
    // A foreign key naming the issuer's kid: the key is found, the signature does not match it.
    const posing = await as.signToken(real, { key: 'foreign', kid: as.signingKid });
    expect(await verifyError(jwtVerify(posing, jwks, options))).toBe('ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
    expect(await verifyError(jwtVerify(await signToken(real, { alg: 'ES256' }), jwks, options))).toBe(
      'ERR_JWKS_NO_MATCHING_KEY',
    );

    const none = unsignedToken(real);
    expect(decodeProtectedHeader(none)).toEqual({ alg: 'none' });
    expect(none.endsWith('.')).toBe(true);
    expect(await verifyError(jwtVerify(none, jwks, options))).toBe('ERR_JOSE_NOT_SUPPORTED');

    // HMAC keyed with the issuer's public key: jose's remote JWKS refuses any symmetric algorithm.
    const confused = await as.signToken(real, { alg: 'HS256' });
    expect(await verifyError(jwtVerify(confused, jwks, options))).toBe('ERR_JOSE_NOT_SUPPORTED');
  });
});

describe('oidc harness: key rotation and outage', () => {
  let as: AuthorizationServer;

  beforeAll(async () => {
    as = await startAuthorizationServer({ clients: CLIENTS, accessTokenTtlSeconds: 60 });
  });

  afterAll(async () => {
    await as?.close();
  });

  it('rotates: new tokens carry the new kid, the JWKS keeps the old key', async () => {
    const before = await as.token('svc-a', { resource: RESOURCE });
    expect(decodeJwt(before).exp! - decodeJwt(before).iat!).toBe(60);
    const oldKid = as.signingKid;
    expect(decodeProtectedHeader(before).kid).toBe(oldKid);
    // Two verifiers that have fetched the JWKS before the rotation: jose's default, which refetches
    // for an unknown kid only 30 s after its last fetch, and one without that cooldown.
    const cached = createRemoteJWKSet(new URL(as.jwksUri));
    const eager = createRemoteJWKSet(new URL(as.jwksUri), { cooldownDuration: 0 });
    await jwtVerify(before, cached);
    await jwtVerify(before, eager);

    const newKid = await as.rotateKeys();
    expect(newKid).not.toBe(oldKid);
    expect(as.signingKid).toBe(newKid);
    expect(await jwksKids(as)).toEqual([newKid, oldKid]);
    const after = await as.token('svc-a', { resource: RESOURCE });
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    expect(decodeProtectedHeader(await as.signToken(decodeJwt(after))).kid).toBe(newKid);

    const fresh = createRemoteJWKSet(new URL(as.jwksUri));
    const options = { issuer: as.issuer, audience: RESOURCE };
    expect((await jwtVerify(before, fresh, options)).protectedHeader.kid).toBe(oldKid);
    expect((await jwtVerify(after, fresh, options)).payload).toMatchObject({ tenant: 'acme' });
    expect((await jwtVerify(after, eager, options)).protectedHeader.kid).toBe(newKid);
    expect(await verifyError(jwtVerify(after, cached, options))).toBe('ERR_JWKS_NO_MATCHING_KEY');

    expect(await as.rotateKeys()).not.toBe(newKid);
    expect(await jwksKids(as)).toHaveLength(3);
  });

  it('stop() takes the JWKS down (connection refused); start() brings it back on the same port', async () => {
    const issuer = as.issuer;
    const kids = await jwksKids(as);
    const token = await as.token('svc-b', { resource: RESOURCE });

    await as.stop();
    expect(await fetchFailure(as.jwksUri)).toBe('ECONNREFUSED');
    await expect(as.token('svc-b', { resource: RESOURCE })).rejects.toThrow();
    // A verifier that has not fetched the JWKS yet cannot verify anything.
    const cold = createRemoteJWKSet(new URL(as.jwksUri));
    await expect(jwtVerify(token, cold)).rejects.toThrow();
    await as.stop();

    await as.start();
    expect(as.issuer).toBe(issuer);
    expect(await jwksKids(as)).toEqual(kids);
    await jwtVerify(token, cold, { issuer, audience: RESOURCE });
    const again = await as.token('svc-b', { resource: RESOURCE });
    expect(decodeProtectedHeader(again).kid).toBe(kids[0]);
    await as.start();
  });
});
