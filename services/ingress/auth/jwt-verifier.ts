import type { AuthInfo, OAuthTokenVerifier } from '@modelcontextprotocol/server';
import { OAuthErrorCode } from '@modelcontextprotocol/server';
import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type FetchImplementation,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import {
  AuthRefusal,
  type CallerIdentity,
  describeProblem,
  identityExtra,
  isTenantName,
} from './identity.js';

/** How the ingress checks OAuth bearer tokens (config `auth.oauth`, durations in ms). */
export interface JwtVerifierOptions {
  /** The authorization server's issuer identifier; tokens must carry it as `iss`. */
  issuer: string;
  /** The issuer's JWKS; empty: read from the issuer's metadata on first use. */
  jwksUri: string;
  /** The `aud` tokens must carry (this server's canonical resource URI by default). */
  audience: string;
  /** This server's canonical resource URI (RFC 8707), reported as `AuthInfo.resource`. */
  resource: URL;
  /** Claim naming the caller's tenant. */
  tenantClaim: string;
  /** Clock difference tolerated on `exp` and `nbf`, in ms. */
  clockSkewMs: number;
  /** Signature algorithms accepted. */
  algorithms: string[];
  /** Least time between two JWKS or metadata fetches, failed ones included, in ms. */
  jwksCooldownMs: number;
  /** How long fetched keys are used before the JWKS is fetched again, in ms. */
  jwksMaxAgeMs: number;
  /** Timeout of one JWKS or metadata fetch, in ms. */
  fetchTimeoutMs: number;
}

/** Verified tokens remembered, at most; the oldest is forgotten first. */
const VERIFIED_CACHE_ENTRIES = 10_000;
/** How long a verified token is trusted without checking its signature again, in ms (at most until `exp`). */
const VERIFIED_CACHE_MS = 60_000;

/**
 * The token may well be good, but the issuer's keys cannot be read now (the JWKS endpoint is
 * down, slow or answers garbage): the front door answers 503 with a retry hint, not 401, so
 * clients retry rather than throw their token away.
 */
export class KeysUnavailableError extends AuthRefusal {
  constructor(
    message: string,
    /** Seconds after which trying again makes sense. */
    readonly retryAfterSeconds: number,
  ) {
    super('keys_unavailable', message, OAuthErrorCode.TemporarilyUnavailable);
  }
}

/**
 * Verifies JWT access tokens locally against the issuer's published keys (jose's remote JWKS:
 * keys cached for `jwksMaxAgeMs`, refetched when a token names an unknown `kid`, so a key
 * rotation at the issuer needs nothing here). Every fetch, including failed ones, is at least
 * `jwksCooldownMs` apart, so a flood of forged tokens or an issuer outage never turns into a
 * flood of requests to the issuer. Checks signature, `iss`, `aud`, `exp` and `nbf` (with
 * `clockSkewMs`), and reads the principal (`iss#sub`), the tenant claim and the scopes
 * (`scope`, space-separated, or `scp`, an array) into `AuthInfo.extra`.
 */
export function createJwtVerifier(options: JwtVerifierOptions): OAuthTokenVerifier {
  let lastFetchFailedAt = Number.NEGATIVE_INFINITY;
  let lastFailure = '';
  const retryAfter = () => Math.max(1, Math.ceil(options.jwksCooldownMs / 1000));
  const guardedFetch: FetchImplementation = async (url, init) => {
    const since = Date.now() - lastFetchFailedAt;
    if (since < options.jwksCooldownMs) {
      throw new KeysUnavailableError(
        `${lastFailure}; next try in ${Math.ceil((options.jwksCooldownMs - since) / 1000)} s`,
        retryAfter(),
      );
    }
    try {
      const response = await fetch(url, init);
      if (!response.ok) fetchFailed(`the issuer's key set at ${url} answered HTTP ${response.status}`);
      return response;
    } catch (err) {
      if (err instanceof KeysUnavailableError) throw err;
      fetchFailed(`cannot reach the issuer's key set at ${url}: ${describeProblem(err)}`);
      throw err;
    }
  };
  const fetchFailed = (why: string) => {
    lastFetchFailedAt = Date.now();
    lastFailure = why;
  };

  let keys: JWTVerifyGetKey | undefined;
  const keySet = async (): Promise<JWTVerifyGetKey> => {
    if (keys) return keys;
    const since = Date.now() - lastFetchFailedAt;
    if (since < options.jwksCooldownMs) throw new KeysUnavailableError(lastFailure, retryAfter());
    let uri: string;
    try {
      uri = options.jwksUri || (await discoverJwksUri(options.issuer, options.fetchTimeoutMs));
    } catch (err) {
      fetchFailed(describeProblem(err));
      throw new KeysUnavailableError(lastFailure, retryAfter());
    }
    keys = createRemoteJWKSet(new URL(uri), {
      timeoutDuration: options.fetchTimeoutMs,
      cooldownDuration: options.jwksCooldownMs,
      cacheMaxAge: options.jwksMaxAgeMs,
      [customFetch]: guardedFetch,
    });
    return keys;
  };

  const verifyOptions = {
    issuer: options.issuer,
    audience: options.audience,
    clockTolerance: Math.round(options.clockSkewMs / 1000),
    algorithms: options.algorithms,
    requiredClaims: ['exp'],
  };

  // An agent presents the same token on every call until it expires; checking its RS256 signature
  // each time cost about 0.5 ms of CPU per call (bench cpu --auth oauth), more than the rest of
  // the call path. A token verified once is trusted for a minute, never past its `exp`: JWT
  // access tokens cannot be revoked anyway, and a key the issuer withdraws is dropped from the
  // cached key set only after `jwksMaxAge`.
  const verified = new Map<string, { info: AuthInfo; untilMs: number }>();
  const remember = (token: string, info: AuthInfo) => {
    if (verified.size >= VERIFIED_CACHE_ENTRIES) {
      const oldest = verified.keys().next().value;
      if (oldest !== undefined) verified.delete(oldest);
    }
    const expiresMs = (info.expiresAt ?? 0) * 1000;
    verified.set(token, { info, untilMs: Math.min(expiresMs, Date.now() + VERIFIED_CACHE_MS) });
  };

  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      const known = verified.get(token);
      if (known) {
        if (known.untilMs > Date.now()) return known.info;
        verified.delete(token);
      }
      const getKey = await keySet();
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, getKey, verifyOptions));
      } catch (err) {
        throw rejectionOf(err, options, lastFailure, retryAfter());
      }
      const tenant = payload[options.tenantClaim];
      if (typeof tenant !== 'string' || !isTenantName(tenant)) {
        throw new AuthRefusal(
          'tenant',
          tenant === undefined
            ? `token has no '${options.tenantClaim}' claim naming the caller's tenant (setting auth.oauth.tenantClaim)`
            : `token's '${options.tenantClaim}' claim is not a tenant name (1-64 of A-Z a-z 0-9 _ . -)`,
        );
      }
      const subject = stringClaim(payload.sub) ?? stringClaim(payload.client_id);
      if (!subject) throw new AuthRefusal('subject', 'token has neither sub nor client_id');
      const identity: CallerIdentity = {
        principal: `${payload.iss}#${subject}`,
        tenant,
        scopes: scopesOf(payload),
      };
      const info: AuthInfo = {
        token,
        clientId: stringClaim(payload.client_id) ?? stringClaim(payload.azp) ?? subject,
        scopes: [...identity.scopes],
        // `exp` is a required claim above.
        expiresAt: payload.exp as number,
        // jose checked `aud` against the configured audience: the token is for this resource.
        resource: options.resource,
        extra: identityExtra(identity),
      };
      remember(token, info);
      return info;
    },
  };
}

function stringClaim(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function scopesOf(payload: JWTPayload): string[] {
  if (typeof payload.scope === 'string') return payload.scope.split(' ').filter((s) => s !== '');
  if (Array.isArray(payload.scp)) return payload.scp.filter((s): s is string => typeof s === 'string');
  return [];
}

/** What the caller is told when jose refuses a token: one sentence a person can act on. */
function rejectionOf(
  err: unknown,
  options: JwtVerifierOptions,
  lastFailure: string,
  retryAfter: number,
): AuthRefusal {
  if (err instanceof KeysUnavailableError) return err;
  const invalid = (reason: string, message: string) => new AuthRefusal(reason, message);
  if (err instanceof errors.JWTExpired)
    return invalid('expired', `token expired (exp ${isoOf(err.payload.exp)})`);
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
        return invalid('not_yet_valid', `token is not valid yet (nbf ${isoOf(err.payload.nbf)})`);
      case 'iss':
        return invalid('issuer', `token was issued by ${String(err.payload.iss)}, not by ${options.issuer}`);
      case 'aud':
        return invalid(
          'audience',
          `token was not issued for this resource: its audience must be ${options.audience} (RFC 8707)`,
        );
      default:
        return invalid('claims', `token claim ${err.claim} is invalid (${err.reason})`);
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed)
    return invalid(
      'algorithm',
      `token algorithm is not accepted here (accepted: ${options.algorithms.join(', ')})`,
    );
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return invalid('signature', 'token signature does not verify');
  if (err instanceof errors.JWKSNoMatchingKey)
    return invalid('signature', 'token is signed with a key the issuer does not publish in its key set');
  if (err instanceof errors.JWKSMultipleMatchingKeys)
    return invalid('malformed', 'token names no key id and the issuer publishes several keys');
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid)
    return new KeysUnavailableError(`the issuer's key set cannot be read: ${err.message}`, retryAfter);
  if (
    err instanceof errors.JWSInvalid ||
    err instanceof errors.JWTInvalid ||
    err instanceof errors.JOSENotSupported
  )
    return invalid('malformed', 'token is not a valid signed JWT');
  if (err instanceof errors.JOSEError && err.code === 'ERR_JOSE_GENERIC')
    return new KeysUnavailableError(
      lastFailure || `the issuer's key set cannot be read: ${err.message}`,
      retryAfter,
    );
  // Anything else happened while fetching the keys (the network failed under jose).
  return new KeysUnavailableError(
    lastFailure || `the issuer's key set cannot be read: ${describeProblem(err)}`,
    retryAfter,
  );
}

function isoOf(seconds: unknown): string {
  return typeof seconds === 'number' ? new Date(seconds * 1000).toISOString() : 'absent';
}

/**
 * The issuer's `jwks_uri`, from its RFC 8414 metadata or, failing that, its OpenID discovery
 * document. The document must name the same issuer (mix-up protection, RFC 8414 section 3.3).
 */
async function discoverJwksUri(issuer: string, timeoutMs: number): Promise<string> {
  const url = new URL(issuer);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  const candidates = [
    `${url.origin}/.well-known/oauth-authorization-server${path}`,
    `${url.origin}${path}/.well-known/openid-configuration`,
  ];
  const problems: string[] = [];
  for (const candidate of candidates) {
    try {
      const response = await fetch(candidate, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
      if (!response.ok) {
        problems.push(`${candidate} answered HTTP ${response.status}`);
        continue;
      }
      const metadata = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
      if (metadata.issuer !== issuer) {
        problems.push(`${candidate} names issuer ${String(metadata.issuer)}, not ${issuer}`);
        continue;
      }
      if (typeof metadata.jwks_uri !== 'string') {
        problems.push(`${candidate} has no jwks_uri`);
        continue;
      }
      return metadata.jwks_uri;
    } catch (err) {
      problems.push(`${candidate}: ${describeProblem(err)}`);
    }
  }
  throw new Error(
    `cannot read the issuer's metadata (${problems.join('; ')}); set auth.oauth.jwksUri or check auth.oauth.issuer`,
  );
}
