import { createHash, createHmac } from 'node:crypto';
import { createRequestStateCodec, type RequestStateCodec } from '@modelcontextprotocol/server';
import { ClusterError } from '../core/index.js';

/**
 * What a signed `requestState` holds: the tool it continues, a tag of the caller it was minted
 * for (a hash, so the principal does not travel in clear), and the tool's own state.
 */
export interface ContinuedState {
  /** Tool name. */
  t: string;
  /** `principalTag` of the caller. */
  p: string;
  /** The state the tool returned; absent when it returned none. */
  s?: string;
}

/** How long a minted `requestState` stays valid, in seconds: a person may take a while to answer. */
export const REQUEST_STATE_TTL_S = 15 * 60;

/**
 * The signed `requestState` of multi-round-trip input (MCP `InputRequiredResult`): every replica
 * that shares the ingress's session secret mints and verifies the same states, so a caller's next
 * round may reach any replica. The signing is the MCP SDK's HMAC-SHA256 codec (with an expiry);
 * the key is derived from the session secret, so the two never share a key. A state is bound to
 * its tool and caller: echoed to another tool or by another principal it is refused like a forged one.
 */
export class RequestStates {
  private readonly codec: RequestStateCodec<ContinuedState>;

  /** @param secret the ingress's session secret (`ingress.sessionSecret`), shared by every replica. */
  constructor(secret: string) {
    // The codec wants at least 32 key bytes; a derived key has exactly that, whatever the secret's length.
    const key = createHmac('sha256', secret).update('mcp-cluster requestState v1').digest();
    this.codec = createRequestStateCodec<ContinuedState>({ key, ttlSeconds: REQUEST_STATE_TTL_S });
  }

  /** The wire `requestState` continuing `tool` for `principal` with the tool's `state`. */
  mint(tool: string, principal: string, state: string | undefined): Promise<string> {
    return this.codec.mint(ownState(tool, principal, state));
  }

  /** The payload of a wire `requestState`; rejects when its signature, expiry or shape is wrong. */
  async verify(wire: string): Promise<ContinuedState> {
    // The codec ignores its context argument when it binds nothing.
    const payload = (await this.codec.verify(wire, undefined as never)) as unknown;
    if (!isContinuedState(payload)) throw new Error('malformed');
    return payload;
  }
}

/**
 * Checks that a verified state continues `tool` for `principal`; throws INVALID_REQUEST_STATE
 * otherwise. Returns the tool's own state.
 */
export function continuedStateFor(
  state: ContinuedState,
  tool: string,
  principal: string,
): string | undefined {
  if (state.t !== tool || state.p !== principalTag(principal)) {
    throw new ClusterError(
      'INVALID_REQUEST_STATE',
      `this requestState continues another tool or caller; call ${tool} again without requestState and inputResponses`,
    );
  }
  return state.s;
}

/** The state a replica continues itself (a 2025-era session's rounds), as a verified one would read. */
export function ownState(tool: string, principal: string, state: string | undefined): ContinuedState {
  return { t: tool, p: principalTag(principal), ...(state !== undefined ? { s: state } : {}) };
}

/** A short, stable tag of a principal, so a state names its caller without showing it. */
function principalTag(principal: string): string {
  return createHash('sha256').update(principal).digest('base64url').slice(0, 16);
}

function isContinuedState(value: unknown): value is ContinuedState {
  if (typeof value !== 'object' || value === null) return false;
  const { t, p, s } = value as Record<string, unknown>;
  return typeof t === 'string' && typeof p === 'string' && (s === undefined || typeof s === 'string');
}
