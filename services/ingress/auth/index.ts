import type { IncomingMessage } from 'node:http';
import type {
  AuthInfo,
  JSONRPCRequest,
  OAuthMetadata,
  OAuthTokenVerifier,
  ScopeChallengeHandler,
} from '@modelcontextprotocol/server';
import {
  bearerAuthChallengeResponse,
  buildOAuthProtectedResourceMetadata,
  getOAuthProtectedResourceMetadataUrl,
  OAuthError,
  OAuthErrorCode,
  requireScopes,
  verifyBearerToken,
} from '@modelcontextprotocol/server';
import {
  ClusterError,
  clusterMetrics,
  type Logger,
  type ResolvedConfig,
  type ToolDefinition,
} from '../../core/index.js';
import { ApiKeyStore, isApiKey } from './api-keys.js';
import {
  ANONYMOUS,
  AuthRefusal,
  type CallerIdentity,
  describeProblem,
  identityExtra,
  isTenantName,
} from './identity.js';
import { createJwtVerifier, KeysUnavailableError } from './jwt-verifier.js';

export type { ApiKeyEntry, NewApiKey } from './api-keys.js';
export { API_KEY_PREFIX, createApiKey, keysFileEntry, parseKeysFile } from './api-keys.js';
export type { CallerIdentity } from './identity.js';
export { ANONYMOUS, identityOf } from './identity.js';

/** How the ingress authenticates (config `auth.mode`). */
export type AuthMode = ResolvedConfig['auth']['mode'];

/** A document served outside `/mcp` (the RFC 9728 metadata). */
export interface AuthRoute {
  path: string;
  body: unknown;
}

/**
 * The front door's authentication: who the caller is, what they may call, and the answers that
 * refuse them (401/403 with the `WWW-Authenticate` challenge the MCP authorization spec asks for,
 * built by the SDK's bearer helpers; 503 when the issuer's keys cannot be read).
 */
export interface FrontDoorAuth {
  readonly mode: AuthMode;
  /** True unless the mode is `none`: tools are then shown and called by scope. */
  readonly enforced: boolean;
  /**
   * The verified identity of `req` as the SDK's `AuthInfo` (the identity in `extra`, see
   * `identityOf`), or the answer refusing it. In mode `none`: anonymous, in the tenant the
   * `Mcp-Cluster-Tenant` header names (else `default`).
   */
  authenticate(req: IncomingMessage): Promise<AuthInfo | Response>;
  /** Whether a caller holding `scopes` may see and call `tool`. */
  allows(tool: ToolDefinition, scopes: readonly string[]): boolean;
  /**
   * The 403 `insufficient_scope` answer for the first `tools/call` in `body` (a message or a
   * batch) whose tool needs scopes `authInfo` lacks, naming every scope needed; else undefined.
   */
  challengeFor(body: unknown, authInfo: AuthInfo): Promise<Response | undefined>;
  /**
   * The 403 `insufficient_scope` answer (counted and audited like the others) when `authInfo`
   * lacks `scope`, e.g. the status page's admin scope; undefined when it holds it, and in mode `none`.
   */
  requireScope(authInfo: AuthInfo, scope: string): Response | undefined;
  /** The RFC 9728 protected-resource metadata documents (path-aware and root forms); none without OAuth. */
  readonly routes: AuthRoute[];
  /** Re-reads the API keys file (SIGHUP); false when it was refused and the old keys stay. */
  reload(): boolean;
  close(): void;
}

/**
 * Builds the front door's authentication from `config.auth`. Throws ClusterError
 * INVALID_CONFIG when the ingress must not start as configured: mode `none` on a non-loopback
 * `ingress.host` without `auth.allowUnauthenticated`, an issuer that is not HTTPS outside
 * localhost, or an API keys file that cannot be read.
 */
export function createFrontDoorAuth(
  config: ResolvedConfig,
  tools: readonly ToolDefinition[],
  log: Logger,
): FrontDoorAuth {
  const { auth } = config;
  const audit = log.child({ audit: true });
  const metrics = clusterMetrics();
  const byName = new Map(tools.map((t) => [t.name, t]));

  if (auth.mode === 'none') {
    if (!isLoopback(config.ingress.host)) {
      if (!auth.allowUnauthenticated) {
        throw new ClusterError(
          'INVALID_CONFIG',
          `ingress.host ${config.ingress.host} is not a loopback address and auth.mode is none: anyone who reaches it could call every tool. Set auth.mode (oauth, api-keys or oauth+api-keys), or set auth.allowUnauthenticated: true when a gateway in front authenticates callers`,
        );
      }
      log.warn(
        'auth.mode is none on a non-loopback address (auth.allowUnauthenticated): every caller is trusted',
        {
          host: config.ingress.host,
        },
      );
    }
    return {
      mode: 'none',
      enforced: false,
      authenticate: async (req) => {
        const tenant = headerValue(req, 'mcp-cluster-tenant');
        const identity: CallerIdentity = {
          principal: ANONYMOUS,
          tenant: tenant && isTenantName(tenant) ? tenant : 'default',
          scopes: [],
        };
        return { token: '', clientId: ANONYMOUS, scopes: [], extra: identityExtra(identity) };
      },
      allows: () => true,
      challengeFor: async () => undefined,
      requireScope: () => undefined,
      routes: [],
      reload: () => true,
      close: () => undefined,
    };
  }

  const withOAuth = auth.mode === 'oauth' || auth.mode === 'oauth+api-keys';
  const withKeys = auth.mode === 'api-keys' || auth.mode === 'oauth+api-keys';
  const resource = auth.resource ? new URL(auth.resource) : undefined;
  const resourceMetadataUrl =
    withOAuth && resource ? getOAuthProtectedResourceMetadataUrl(resource) : undefined;
  const baseScopes = auth.requiredScopes;

  const routes: AuthRoute[] = [];
  if (withOAuth && resource) {
    let document: unknown;
    try {
      document = buildOAuthProtectedResourceMetadata({
        // Only the issuer is read: the document names the authorization server, clients read its own metadata.
        oauthMetadata: { issuer: auth.oauth.issuer } as OAuthMetadata,
        resourceServerUrl: resource,
        scopesSupported: [...new Set([...baseScopes, ...tools.flatMap((t) => t.scopes)])],
        resourceName: 'mcp-cluster',
      });
    } catch (err) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `auth.oauth.issuer ${auth.oauth.issuer}: ${describeProblem(err)}`,
      );
    }
    const pathAware = new URL(getOAuthProtectedResourceMetadataUrl(resource)).pathname;
    routes.push({ path: pathAware, body: document });
    if (pathAware !== '/.well-known/oauth-protected-resource')
      routes.push({ path: '/.well-known/oauth-protected-resource', body: document });
  }

  const jwt: OAuthTokenVerifier | undefined =
    withOAuth && resource
      ? createJwtVerifier({
          issuer: auth.oauth.issuer,
          jwksUri: auth.oauth.jwksUri,
          audience: auth.oauth.audience || auth.resource,
          resource,
          tenantClaim: auth.oauth.tenantClaim,
          clockSkewMs: auth.oauth.clockSkewMs,
          algorithms: auth.oauth.algorithms,
          jwksCooldownMs: auth.oauth.jwksCooldownMs,
          jwksMaxAgeMs: auth.oauth.jwksMaxAgeMs,
          fetchTimeoutMs: auth.oauth.fetchTimeoutMs,
        })
      : undefined;
  const keys = withKeys
    ? new ApiKeyStore(auth.apiKeys.file, { pollIntervalMs: auth.apiKeys.pollIntervalMs, log })
    : undefined;

  const verifier: OAuthTokenVerifier = {
    async verifyAccessToken(token) {
      if (isApiKey(token)) {
        if (!keys)
          throw new AuthRefusal(
            'mode',
            'this server does not accept API keys; present an OAuth access token',
          );
        return keys.verify(token, resource);
      }
      if (!jwt) throw new AuthRefusal('mode', 'this server accepts only API keys (mcpk_...), not tokens');
      return jwt.verifyAccessToken(token);
    },
  };
  const allows = (tool: ToolDefinition, scopes: readonly string[]) =>
    tool.scopes.every((s) => scopes.includes(s));
  // The SDK's scope-challenge handler per tool that needs scopes of its own.
  const challenges = new Map<string, ScopeChallengeHandler>();
  for (const tool of tools) {
    const [first, ...rest] = tool.scopes;
    if (first !== undefined) challenges.set(tool.name, requireScopes(first, ...rest));
  }

  return {
    mode: auth.mode,
    enforced: true,
    async authenticate(req) {
      const apiKeyHeader = headerValue(req, 'x-api-key');
      const authorization = apiKeyHeader !== undefined ? `Bearer ${apiKeyHeader}` : req.headers.authorization;
      try {
        const info = await verifyBearerToken(authorization, {
          verifier,
          ...(resource ? { expectedResource: resource } : {}),
        });
        const missing = baseScopes.filter((s) => !info.scopes.includes(s));
        if (missing.length > 0) {
          throw new AuthRefusal(
            'scope',
            `this server needs scope ${baseScopes.join(' ')}; the credential lacks ${missing.join(' ')}`,
            OAuthErrorCode.InsufficientScope,
          );
        }
        return resourceMetadataUrl ? { ...info, resourceMetadataUrl } : info;
      } catch (err) {
        return refuse(req, err);
      }
    },
    allows,
    async challengeFor(body, authInfo) {
      for (const message of Array.isArray(body) ? body : [body]) {
        const name = toolCallName(message);
        const tool = name === undefined ? undefined : byName.get(name);
        const handler = tool && challenges.get(tool.name);
        if (!tool || !handler) continue;
        const challenge = await handler({ request: message as JSONRPCRequest, authInfo });
        if (!challenge) continue;
        // The challenge names the complete set: what every request needs and what the tool needs.
        const needed = [...new Set([...baseScopes, ...challenge.scopes])];
        const lacking = tool.scopes.filter((s) => !authInfo.scopes.includes(s));
        const error = new AuthRefusal(
          'scope',
          `tool ${tool.name} needs scope ${tool.scopes.join(' ')}; the credential lacks ${lacking.join(' ')}`,
          OAuthErrorCode.InsufficientScope,
        );
        return refuse(undefined, error, needed, identityOfInfo(authInfo));
      }
      return undefined;
    },
    requireScope(authInfo, scope) {
      if (authInfo.scopes.includes(scope)) return undefined;
      const error = new AuthRefusal(
        'scope',
        `this needs scope ${scope}; the credential lacks it`,
        OAuthErrorCode.InsufficientScope,
      );
      return refuse(undefined, error, [...new Set([...baseScopes, scope])], identityOfInfo(authInfo));
    },
    routes,
    reload: () => keys?.reload() ?? true,
    close: () => keys?.close(),
  };

  /** The answer refusing a request, counted and audited (reason, remote address, never the credential). */
  function refuse(
    req: IncomingMessage | undefined,
    err: unknown,
    requiredScopes: readonly string[] = baseScopes,
    who?: CallerIdentity,
  ): Response {
    const reason = err instanceof AuthRefusal ? err.reason : sdkReasonOf(err);
    metrics.authFailures.inc({ reason });
    audit.warn('auth refused', {
      reason,
      problem: err instanceof Error ? err.message : String(err),
      ...(req ? { remote: req.socket.remoteAddress } : {}),
      ...(who ? { principal: who.principal, tenant: who.tenant } : {}),
    });
    if (err instanceof KeysUnavailableError) {
      return Response.json(err.toResponseObject(), {
        status: 503,
        headers: { 'retry-after': String(err.retryAfterSeconds) },
      });
    }
    if (!(err instanceof OAuthError)) log.error('authentication failed unexpectedly', { err });
    return bearerAuthChallengeResponse(err, {
      requiredScopes: [...requiredScopes],
      ...(resourceMetadataUrl ? { resourceMetadataUrl } : {}),
    });
  }
}

function identityOfInfo(info: AuthInfo): CallerIdentity | undefined {
  const extra = info.extra;
  return typeof extra?.principal === 'string' && typeof extra.tenant === 'string'
    ? { principal: extra.principal, tenant: extra.tenant, scopes: info.scopes }
    : undefined;
}

/** The reason label of a refusal the SDK's bearer helper raised itself. */
function sdkReasonOf(err: unknown): string {
  if (!(err instanceof OAuthError)) return 'internal';
  if (err.message.startsWith('Missing Authorization')) return 'missing';
  if (err.message.startsWith('Invalid Authorization')) return 'malformed';
  if (err.message.includes('not issued for this resource')) return 'audience';
  if (err.message.includes('expired')) return 'expired';
  return err.code === OAuthErrorCode.InsufficientScope ? 'scope' : 'invalid';
}

function toolCallName(message: unknown): string | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const { method, params } = message as { method?: unknown; params?: { name?: unknown } };
  if (method !== 'tools/call' || typeof params !== 'object' || params === null) return undefined;
  return typeof params.name === 'string' ? params.name : undefined;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Whether `host` (an `ingress.host` value) only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
