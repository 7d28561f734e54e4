import type { AuthInfo } from '@modelcontextprotocol/server';
import { OAuthError, OAuthErrorCode } from '@modelcontextprotocol/server';

/**
 * Who is calling, as the front door verified it. This, never the credential, is what travels
 * with a call (`ToolCall.principal`, `tenant`, `scopes`).
 */
export interface CallerIdentity {
  /** `<issuer>#<subject>` for an OAuth token, `key:<id>` for an API key, `anonymous` without auth. */
  principal: string;
  /** The tenant the credential belongs to (the `Mcp-Cluster-Tenant` header only without auth). */
  tenant: string;
  /** What the credential grants. */
  scopes: readonly string[];
}

/** The caller of an ingress that does not authenticate (mode `none`). */
export const ANONYMOUS = 'anonymous';

const TENANT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Tenant names become label values and keys: only short, plain names pass. */
export function isTenantName(value: string): boolean {
  return TENANT_NAME.test(value);
}

/** The identity as `AuthInfo.extra` carries it through the SDK's `fetch(req, { authInfo })`. */
export function identityExtra(identity: CallerIdentity): Record<string, unknown> {
  return { principal: identity.principal, tenant: identity.tenant };
}

/**
 * The identity the front door put on `authInfo` (the SDK hands it to handlers as
 * `ctx.http.authInfo`); anonymous in tenant `default` when there is none.
 */
export function identityOf(authInfo: AuthInfo | undefined): CallerIdentity {
  const extra = authInfo?.extra;
  if (!authInfo || typeof extra?.principal !== 'string' || typeof extra.tenant !== 'string')
    return { principal: ANONYMOUS, tenant: 'default', scopes: [] };
  return { principal: extra.principal, tenant: extra.tenant, scopes: authInfo.scopes };
}

/** An error's message, for a log line or an answer; never a stack. */
export function describeProblem(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}

/**
 * A credential refused, with the reason counted and audited (a short label such as `expired`,
 * `audience` or `unknown_key`). `invalid_token` unless said otherwise: the SDK's challenge
 * helper answers it 401.
 */
export class AuthRefusal extends OAuthError {
  constructor(
    readonly reason: string,
    message: string,
    code: OAuthErrorCode = OAuthErrorCode.InvalidToken,
  ) {
    super(code, message);
  }
}
