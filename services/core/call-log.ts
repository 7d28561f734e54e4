// MCP log levels and the per-call log gate shared by the ingress (which reads the level a caller
// asked for) and the worker (which drops what the caller did not ask for, before it travels).

/** The MCP log levels, lowest severity first (RFC 5424 order, as `logging/setLevel` names them). */
export const MCP_LOG_LEVELS = [
  'debug',
  'info',
  'notice',
  'warning',
  'error',
  'critical',
  'alert',
  'emergency',
] as const;

/** One MCP log level. */
export type McpLogLevel = (typeof MCP_LOG_LEVELS)[number];

const SEVERITY = new Map<string, number>(MCP_LOG_LEVELS.map((level, index) => [level, index]));
const WARNING = SEVERITY.get('warning') as number;

/** Whether `value` names an MCP log level. */
export function isMcpLogLevel(value: unknown): value is McpLogLevel {
  return typeof value === 'string' && SEVERITY.has(value);
}

/** One log message of a running call, as it becomes `notifications/message`. */
export interface CallLogMessage {
  level: McpLogLevel;
  /** Any JSON value. */
  data: unknown;
  /** The logger's name; omitted when the tool gave none. */
  logger?: string;
}

/** Messages a call may send at once before the rate limit applies (see {@link CallLogGate}). */
export const CALL_LOG_BURST = 50;
/** Messages per second a call may send after its burst is spent. */
export const CALL_LOG_PER_SECOND = 20;

/**
 * Decides which log messages of one call travel: those at or above the level the caller asked
 * for (none when it asked for none), within a token bucket of {@link CALL_LOG_BURST} messages
 * refilled at {@link CALL_LOG_PER_SECOND} a second, so a chatty tool cannot flood the delivery
 * stream or the caller. What the bucket refuses is counted in `dropped`, not queued: a late log
 * line is worth less than the result it would delay.
 */
export class CallLogGate {
  /** Messages refused by the rate limit so far. */
  dropped = 0;
  private readonly threshold: number | undefined;
  private tokens = CALL_LOG_BURST;
  private refilledAtMs: number;

  /** @param level the lowest level the caller asked for; absent, empty or unknown: none. */
  constructor(
    level: string | null | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.threshold = level ? SEVERITY.get(level) : undefined;
    this.refilledAtMs = now();
  }

  /** Whether the caller asked for any log messages at all. */
  get wanted(): boolean {
    return this.threshold !== undefined;
  }

  /**
   * The message that tells the caller how many messages the rate limit dropped, sent once after the
   * call's last log (it bypasses the bucket); undefined when none were dropped or the caller's level
   * is above `warning`.
   */
  droppedNotice(): CallLogMessage | undefined {
    if (this.dropped === 0 || (this.threshold ?? Number.POSITIVE_INFINITY) > WARNING) return undefined;
    return {
      level: 'warning',
      logger: 'mcp-cluster',
      data: {
        message:
          `${this.dropped} log messages of this call were dropped by its rate limit ` +
          `(${CALL_LOG_BURST} at once, then ${CALL_LOG_PER_SECOND} a second)`,
        dropped: this.dropped,
      },
    };
  }

  /** Whether a message at `level` goes to the caller; spends a token when it does. */
  admit(level: McpLogLevel): boolean {
    const severity = SEVERITY.get(level);
    if (this.threshold === undefined || severity === undefined || severity < this.threshold) return false;
    const now = this.now();
    this.tokens = Math.min(
      CALL_LOG_BURST,
      this.tokens + ((now - this.refilledAtMs) / 1000) * CALL_LOG_PER_SECOND,
    );
    this.refilledAtMs = now;
    if (this.tokens < 1) {
      this.dropped++;
      return false;
    }
    this.tokens--;
    return true;
  }
}
