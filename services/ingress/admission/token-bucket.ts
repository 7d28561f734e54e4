/**
 * A token bucket on an injected clock: holds at most `burst` tokens, refills at `ratePerS` tokens
 * per second, and a call takes one token. Both can change while it runs (a replica's share of a
 * tenant's limit moves with its share of the demand); tokens above a lowered burst are dropped.
 */
export class TokenBucket {
  private tokens: number;
  private lastMs: number;

  constructor(
    private ratePerS: number,
    private burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.lastMs = nowMs;
  }

  /** Changes the refill rate (tokens/s) and size (tokens), keeping the tokens earned so far. */
  resize(ratePerS: number, burst: number, nowMs: number): void {
    this.refill(nowMs);
    this.ratePerS = ratePerS;
    this.burst = burst;
    this.tokens = Math.min(this.tokens, burst);
  }

  /** Whether a token is there now (takes nothing). */
  has(nowMs: number): boolean {
    this.refill(nowMs);
    return this.tokens >= 1;
  }

  /** Takes a token if one is there; false otherwise. */
  take(nowMs: number): boolean {
    if (!this.has(nowMs)) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token will be there (0 when one is); Infinity when the bucket never refills. */
  msUntilToken(nowMs: number): number {
    this.refill(nowMs);
    if (this.tokens >= 1) return 0;
    if (this.ratePerS <= 0) return Number.POSITIVE_INFINITY;
    return ((1 - this.tokens) / this.ratePerS) * 1000;
  }

  private refill(nowMs: number): void {
    const elapsedMs = nowMs - this.lastMs;
    // A clock that went backwards earns nothing (and takes nothing back).
    if (elapsedMs > 0) this.tokens = Math.min(this.burst, this.tokens + (elapsedMs / 1000) * this.ratePerS);
    this.lastMs = Math.max(this.lastMs, nowMs);
  }
}
