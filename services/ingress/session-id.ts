import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Self-contained MCP session ids for 2025-era clients: `s1.<random>.<hmac>`, the HMAC taken over
 * the random part and the principal that initialized the session. Any replica that shares the
 * secret accepts an id minted by another without server-side state; a forged or altered id, or
 * a real one presented by another principal, fails verification. The id is what
 * `notifications/cancelled` is matched on, together with the JSON-RPC request id, so binding it
 * to its principal keeps anyone from cancelling another caller's calls by guessing request ids.
 */
export class SessionIds {
  private readonly key: Buffer;

  /** @param secret shared HMAC key; every replica of a cluster must use the same one. */
  constructor(secret: string) {
    this.key = Buffer.from(secret, 'utf8');
  }

  /** A new session id for `principal` (see `CallerIdentity.principal`). */
  mint(principal: string): string {
    const nonce = randomBytes(18).toString('base64url');
    return `s1.${nonce}.${this.sign(nonce, principal)}`;
  }

  /** Whether `id` was minted with this secret for `principal`. */
  verify(id: string, principal: string): boolean {
    const parts = id.split('.');
    if (parts.length !== 3 || parts[0] !== 's1' || !parts[1] || !parts[2]) return false;
    const expected = Buffer.from(this.sign(parts[1], principal));
    const given = Buffer.from(parts[2]);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  private sign(nonce: string, principal: string): string {
    // The nonce is base64url, so the NUL cannot be part of it: nonce and principal stay apart.
    return createHmac('sha256', this.key)
      .update(`${nonce}\u0000${principal}`)
      .digest('base64url')
      .slice(0, 32);
  }
}
