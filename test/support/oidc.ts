// A real OAuth 2 / OpenID authorization server for the tests of the cluster's resource-server support:
// oidc-provider (the certified Node implementation) in the test process, so the cluster's token checks
// meet tokens, discovery and a JWKS exactly as a production AS serves them, not a mock's idea of them.
// Plus forgers built with jose for the negative tests (foreign key, `alg: none`, bad claims).

import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  calculateJwkThumbprint,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  generateSecret,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from 'jose';
import Provider, {
  type Adapter,
  type AdapterPayload,
  type Configuration,
  errors as providerErrors,
} from 'oidc-provider';
import { waitFor } from './wait.js';

/** A confidential client registered at the authorization server, for the client-credentials grant. */
export interface OidcClient {
  /** The `client_id`; keep it to unreserved URL characters (see {@link AuthorizationServer.token}). */
  clientId: string;
  /** The `client_secret`, sent with `client_secret_basic`; same character advice as `clientId`. */
  clientSecret: string;
  /**
   * The space-separated scopes the client may request (its registered `scope`). Every scope any client
   * lists is also a scope the authorization server knows: asking for a known scope outside this list is
   * an `invalid_scope` error, asking for an unknown one is silently dropped (see
   * {@link AuthorizationServer.token}). `''`: the client gets tokens without scope, whatever it asks.
   */
  scope: string;
  /** Put into this client's access tokens as the `tenant` claim; no claim when absent. */
  tenant?: string;
}

/** Which key {@link AuthorizationServer.signToken} signs with. */
export type ForgeKey = 'foreign' | 'issuer';

/** How to sign a forged token. */
export interface SignTokenOptions {
  /**
   * `'issuer'` (the default of {@link AuthorizationServer.signToken}): the authorization server's
   * current private signing key, so the token verifies against its JWKS and only the claims can be
   * wrong. `'foreign'`: a key generated in this process and never published in any JWKS.
   */
  key?: ForgeKey;
  /**
   * JWS algorithm; default `RS256`. With the issuer's key any RSA algorithm works (RS256/384/512,
   * PS256/384/512), and `HS256`/`HS384`/`HS512` mount the algorithm-confusion attack: an HMAC keyed with
   * the issuer's public key (its SPKI PEM text). With a foreign key any jose algorithm works (a fresh
   * key of that type; an HMAC algorithm gets a random secret).
   */
  alg?: string;
  /**
   * The header's `kid`. Default: the issuer's current kid for `'issuer'`, and a kid no JWKS holds for
   * `'foreign'`; set the issuer's kid on a foreign-key token to forge one that names a published key.
   */
  kid?: string;
  /** The header's `typ`; default `at+jwt`, as the authorization server's own access tokens carry. */
  typ?: string;
}

/**
 * A running authorization server (oidc-provider 9) on 127.0.0.1, HTTP, for client-credentials tokens.
 *
 * What it serves: discovery at RFC 8414's `{issuer}/.well-known/oauth-authorization-server` and at
 * `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery), the two naming the same
 * issuer, token endpoint and JWKS; the JWKS at {@link jwksUri}, the token endpoint at
 * {@link tokenEndpoint}.
 *
 * Access tokens are JWTs only when the token request names a `resource` (RFC 8707): any absolute http(s)
 * URI is accepted as a resource (another scheme, e.g. `urn:`, is `invalid_target`), and becomes the
 * token's `aud` exactly as sent, a string (no normalisation: `http://127.0.0.1:8080` and
 * `http://127.0.0.1:8080/` are two different audiences). A request without `resource` gets an opaque
 * (non-JWT) access token. The JWT's header is `{ alg: 'RS256', typ: 'at+jwt', kid }` (RFC 9068's
 * `typ`, not `JWT`) and its claims are exactly: `iss` (the {@link issuer}), `aud` (the resource), `sub` and
 * `client_id` (both the client id: oidc-provider puts the client id in `sub` when there is no end user),
 * `iat`, `exp` (`iat` + the TTL, seconds), `jti`, `scope` (space-separated, only when at least one
 * scope was granted; absent otherwise) and `tenant` (when the client has one). There is no `nbf`.
 */
export interface AuthorizationServer {
  /** `http://127.0.0.1:PORT`, no trailing slash; the `iss` of its tokens and its discovery `issuer`. */
  readonly issuer: string;
  /** `{issuer}/jwks`: the public signing keys, newest first. */
  readonly jwksUri: string;
  /** `{issuer}/token`. */
  readonly tokenEndpoint: string;
  /** The kid of the key tokens are signed with now. */
  readonly signingKid: string;
  /**
   * Client-credentials grant at the real token endpoint (POST, `client_secret_basic`), with `resource`
   * (RFC 8707) and `scope`; resolves to the access token (a JWT). `scope` defaults to the client's whole
   * registered scope; `''` sends no scope, which yields a token without a `scope` claim. Rejects with an
   * Error whose message holds the AS's error body text (e.g. `{"error":"invalid_scope",...}`) on failure.
   *
   * Scope handling (oidc-provider 9): a requested scope that some client of this AS registers but
   * this client does not is refused with HTTP 400 `invalid_scope` ("requested scope is not allowed",
   * and no token); a scope no client registers is silently dropped from the token (which may then have
   * no `scope` claim at all). So a client that over-asks for a known scope gets no token rather than a
   * narrower one: a scope step-up must request only scopes the client may have.
   *
   * Basic auth form-encodes id and secret (RFC 6749 2.3.1) and the AS decodes them; the MCP SDK's
   * client sends them raw, so with it an id or secret holding `%` or `+` (or an id holding `:`) fails.
   * Throws at once for a client id not registered here.
   */
  token(clientId: string, options: { resource: string; scope?: string }): Promise<string>;
  /**
   * Signs `claims`, exactly as given (nothing is added: take a real token's claims with jose's
   * `decodeJwt` and change one, e.g. a past `exp`, a future `nbf`, another `aud` or `iss`), with the
   * issuer's current key by default; see {@link SignTokenOptions}.
   */
  signToken(claims: JWTPayload, options?: SignTokenOptions): Promise<string>;
  /**
   * Adds a new signing key, makes it the one tokens are signed with from now on, and keeps the old ones
   * in the JWKS (key rotation). Returns the new kid. (oidc-provider reads its keys once, so this builds
   * a new provider with the same issuer, clients and configuration on the same listening socket.)
   */
  rotateKeys(): Promise<string>;
  /**
   * Stops listening and destroys open connections, so the JWKS and token endpoints refuse connections
   * (ECONNREFUSED), but keeps the state: {@link start} listens again on the SAME port with the same keys.
   * Resolves once a fetch from this process is refused (not failed on a stale keep-alive socket).
   */
  stop(): Promise<void>;
  /** Listens again after {@link stop}; a no-op while listening. */
  start(): Promise<void>;
  /** Stops for good. */
  close(): Promise<void>;
}

/** One signing key of the authorization server: the private JWK it is configured with, and the keys. */
interface SigningKey {
  readonly kid: string;
  readonly jwk: JWK;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
}

/** The one algorithm the authorization server signs access tokens with. */
const AS_ALG = 'RS256';

/** An RSA key for the AS, its kid the RFC 7638 thumbprint (what many real servers use). */
async function newSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(AS_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { kid, jwk: { ...jwk, kid, alg: AS_ALG, use: 'sig' }, privateKey, publicKey };
}

/**
 * oidc-provider's storage, in memory. Its own in-memory adapter works too but prints a "development
 * only" warning on every construction; this one stays quiet. `expiresIn` is in seconds.
 */
function memoryAdapter(store: Map<string, { payload: AdapterPayload; expiresAt: number }>) {
  return (model: string): Adapter => {
    const key = (id: string) => `${model}:${id}`;
    const find = async (id: string) => {
      const entry = store.get(key(id));
      return entry && entry.expiresAt > Date.now() ? entry.payload : undefined;
    };
    const findBy = async (field: string, value: string) => {
      for (const [k, entry] of store) {
        if (k.startsWith(`${model}:`) && entry.payload[field] === value && entry.expiresAt > Date.now()) {
          return entry.payload;
        }
      }
      return undefined;
    };
    return {
      upsert: async (id, payload, expiresIn) => {
        store.set(key(id), { payload, expiresAt: Date.now() + expiresIn * 1000 });
      },
      find,
      findByUid: (uid) => findBy('uid', uid),
      findByUserCode: (userCode) => findBy('userCode', userCode),
      consume: async (id) => {
        const entry = store.get(key(id));
        if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
      },
      destroy: async (id) => {
        store.delete(key(id));
      },
      revokeByGrantId: async (grantId) => {
        for (const [k, entry] of store) if (entry.payload.grantId === grantId) store.delete(k);
      },
    };
  };
}

/** RFC 6749 2.3.1: client id and secret are form-encoded before they are joined for Basic auth. */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}

/** Listens on 127.0.0.1:`port` (0: a free one) and resolves with the port. */
function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Starts an authorization server on a free port of 127.0.0.1 with `clients` registered (confidential,
 * client-credentials grant only, `client_secret_basic`). `accessTokenTtlSeconds` (default 300) is the
 * access tokens' lifetime, in seconds. Close it with {@link AuthorizationServer.close}.
 */
export async function startAuthorizationServer(options: {
  clients: OidcClient[];
  accessTokenTtlSeconds?: number;
}): Promise<AuthorizationServer> {
  const ttl = options.accessTokenTtlSeconds ?? 300;
  const clients = new Map(options.clients.map((c) => [c.clientId, c]));
  if (clients.size !== options.clients.length) throw new Error('two clients share a clientId');
  // The scopes the AS knows: the union of what its clients may ask for (see OidcClient.scope).
  const scopes = [...new Set(options.clients.flatMap((c) => c.scope.split(' ').filter(Boolean)))];
  const keys: SigningKey[] = [await newSigningKey()];
  const store = new Map<string, { payload: AdapterPayload; expiresAt: number }>();
  // The errors behind `server_error` responses, to say more than oidc-provider's body does.
  const serverErrors: Error[] = [];

  // The port is part of the issuer, and the issuer is fixed when the provider is made: listen first,
  // then route requests to the provider (and, after a rotation, to its successor).
  let handle: (req: IncomingMessage, res: ServerResponse) => Promise<void> = async (_req, res) => {
    res.writeHead(503).end();
  };
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  const port = await listen(server, 0);
  const issuer = `http://127.0.0.1:${port}`;
  const jwksUri = `${issuer}/jwks`;
  let listening = true;
  let closed = false;

  const build = (): void => {
    const signing = keys[0]!;
    const configuration: Configuration = {
      adapter: memoryAdapter(store),
      clients: options.clients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        // oidc-provider refuses an empty scope string (invalid_client_metadata): no scope is `undefined`.
        scope: c.scope || undefined,
      })),
      jwks: { keys: keys.map((k) => ({ ...k.jwk })) },
      scopes,
      // Set only to silence the provider's warnings: no cookie, CORS or account is used by this grant.
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      clientBasedCORS: () => true,
      findAccount: async () => undefined,
      routes: { jwks: '/jwks', token: '/token' },
      ttl: { ClientCredentials: ttl, AccessToken: ttl },
      extraTokenClaims: async (_ctx, token) => {
        const tenant = clients.get(token.clientId)?.tenant;
        return tenant === undefined ? undefined : { tenant };
      },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          getResourceServerInfo: async (_ctx, resource, client) => {
            if (!/^https?:\/\//.test(resource)) throw new providerErrors.InvalidTarget();
            return {
              // What the token may carry. oidc-provider checks a request against the client's registered
              // scope only when there is one; a client registered without scope would get any scope,
              // so for it the resource allows none (they are dropped, see OidcClient.scope).
              scope: client.scope ? scopes.join(' ') : '',
              audience: resource,
              accessTokenFormat: 'jwt',
              accessTokenTTL: ttl,
              jwt: { sign: { alg: AS_ALG, kid: signing.kid } },
            };
          },
        },
      },
    };
    const provider = new Provider(issuer, configuration);
    provider.on('server_error', (_ctx: unknown, err: Error) => {
      serverErrors.push(err);
    });
    handle = provider.callback();
  };
  build();

  const stop = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // close() only stops accepting; keep-alive connections would go on serving the JWKS.
      server.closeAllConnections();
    });
    // fetch's keep-alive pool in this process learns that its sockets to us are closed a moment later;
    // until then a request goes out on a dead socket and fails with "other side closed"
    // (UND_ERR_SOCKET), not the refused connection of a server that is down. Wait for the refusal.
    await waitFor(`${issuer} to refuse connections`, () =>
      fetch(jwksUri).then(
        () => false,
        (err: Error) => (err.cause as { code?: string } | undefined)?.code === 'ECONNREFUSED',
      ),
    );
  };

  return {
    issuer,
    jwksUri,
    tokenEndpoint: `${issuer}/token`,
    get signingKid() {
      return keys[0]!.kid;
    },
    async token(clientId, { resource, scope }) {
      const client = clients.get(clientId);
      if (!client) throw new Error(`no client ${clientId} is registered at ${issuer}`);
      const body = new URLSearchParams({ grant_type: 'client_credentials', resource });
      const requested = scope ?? client.scope;
      if (requested) body.set('scope', requested);
      const basic = Buffer.from(`${formEncode(clientId)}:${formEncode(client.clientSecret)}`).toString(
        'base64',
      );
      const errorsBefore = serverErrors.length;
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, accept: 'application/json' },
        body,
      });
      const text = await response.text();
      if (!response.ok) {
        const cause = serverErrors
          .slice(errorsBefore)
          .map((err) => ` (server error: ${err.message})`)
          .join('');
        throw new Error(`token request for ${clientId} failed with HTTP ${response.status}: ${text}${cause}`);
      }
      const accessToken = (JSON.parse(text) as { access_token?: unknown }).access_token;
      if (typeof accessToken !== 'string') throw new Error(`token response without access_token: ${text}`);
      return accessToken;
    },
    async signToken(claims, signOptions = {}) {
      const { key = 'issuer', alg = AS_ALG, kid, typ = 'at+jwt' } = signOptions;
      if (key === 'foreign') return signToken(claims, { alg, kid, typ });
      const current = keys[0]!;
      const signingKey = alg.startsWith('HS')
        ? new TextEncoder().encode(await exportSPKI(current.publicKey))
        : current.privateKey;
      return new SignJWT(claims).setProtectedHeader({ alg, typ, kid: kid ?? current.kid }).sign(signingKey);
    },
    async rotateKeys() {
      keys.unshift(await newSigningKey());
      build();
      return keys[0]!.kid;
    },
    stop,
    async start() {
      if (closed) throw new Error('this authorization server is closed');
      if (listening) return;
      await listen(server, port);
      listening = true;
    },
    async close() {
      closed = true;
      await stop();
    },
  };
}

/** Foreign keys by algorithm, made once per process (RSA key generation takes tens of ms). */
const foreignKeys = new Map<string, Promise<CryptoKey | Uint8Array>>();

function foreignKey(alg: string): Promise<CryptoKey | Uint8Array> {
  let key = foreignKeys.get(alg);
  if (!key) {
    key = alg.startsWith('HS') ? generateSecret(alg) : generateKeyPair(alg).then((pair) => pair.privateKey);
    foreignKeys.set(alg, key);
  }
  return key;
}

/**
 * Signs `claims` (exactly as given) with a foreign key: one made in this process and published in no
 * JWKS, so a verifier that trusts only the authorization server's JWKS must reject the token whatever
 * its claims and whatever kid it names. Options as {@link SignTokenOptions} (`key` is always foreign
 * here; the issuer's key is {@link AuthorizationServer.signToken}): `alg` default RS256, `kid` default
 * `foreign-key`, `typ` default `at+jwt`.
 */
export async function signToken(
  claims: JWTPayload,
  options: Omit<SignTokenOptions, 'key'> & { key?: 'foreign' } = {},
): Promise<string> {
  const { alg = AS_ALG, kid = 'foreign-key', typ = 'at+jwt' } = options;
  return new SignJWT(claims).setProtectedHeader({ alg, typ, kid }).sign(await foreignKey(alg));
}

/**
 * An unsecured JWT (`alg: none`, empty signature; RFC 7519 6) carrying `claims` exactly as given, made
 * with jose's UnsecuredJWT: a verifier must refuse it whatever it claims.
 */
export function unsignedToken(claims: JWTPayload): string {
  return new UnsecuredJWT(claims).encode();
}
