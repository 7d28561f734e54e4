import type { McpLogLevel } from '../core/index.js';

/** Sessions whose log level one replica remembers at most; the least recently set go first. */
export const SESSION_LOG_LEVELS = 100_000;

/**
 * The log level each 2025-era session set with `logging/setLevel`, on this replica. Session ids
 * carry no state (see session-id.ts), so the level lives here: a caller that sets it on one
 * replica gets log messages from calls served by that replica (one replica, or a load balancer
 * that keeps a session on one replica). Bounded: past {@link SESSION_LOG_LEVELS} sessions the
 * least recently set level is forgotten, and its session then gets no log messages until it sets
 * one again.
 */
export class SessionLogLevels {
  private readonly levels = new Map<string, McpLogLevel>();

  constructor(private readonly capacity = SESSION_LOG_LEVELS) {}

  /** Remembers `level` for `sessionId`, replacing what the session set before. */
  set(sessionId: string, level: McpLogLevel): void {
    // Re-inserted so the Map's order is the order levels were last set in.
    this.levels.delete(sessionId);
    this.levels.set(sessionId, level);
    if (this.levels.size > this.capacity) {
      const oldest = this.levels.keys().next().value;
      if (oldest !== undefined) this.levels.delete(oldest);
    }
  }

  /** The level `sessionId` set, if it set one on this replica. */
  get(sessionId: string): McpLogLevel | undefined {
    return this.levels.get(sessionId);
  }
}
