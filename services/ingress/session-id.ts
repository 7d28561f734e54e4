import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Self-contained MCP session ids for 2025-era clients: `s1.<random>.<hmac>`. Any replica that
 * shares the secret accepts an id minted by another without server-side state, and a forged or
 * altered id fails verification. The id is the caller identity that `notifications/cancelled`
 * is matched on, together with the JSON-RPC request id.
 */
export class SessionIds {
  private readonly key: Buffer;

  /** @param secret shared HMAC key; every replica of a cluster must use the same one. */
  constructor(secret: string) {
    this.key = Buffer.from(secret, 'utf8');
  }

  /** A new session id. */
  mint(): string {
    const nonce = randomBytes(18).toString('base64url');
    return `s1.${nonce}.${this.sign(nonce)}`;
  }

  /** Whether `id` was minted with this secret. */
  verify(id: string): boolean {
    const parts = id.split('.');
    if (parts.length !== 3 || parts[0] !== 's1' || !parts[1] || !parts[2]) return false;
    const expected = Buffer.from(this.sign(parts[1]));
    const given = Buffer.from(parts[2]);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  private sign(nonce: string): string {
    return createHmac('sha256', this.key).update(nonce).digest('base64url').slice(0, 32);
  }
}
