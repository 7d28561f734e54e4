/** Severity of a log line. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Structured fields of a log line; `callId` is set on everything about one call. */
export type LogFields = Record<string, unknown> & { callId?: string };

/**
 * JSON lines on stderr, one object per event, with the component and any fields given.
 * stdout stays free for what a command prints for people (URLs, `config check` results).
 */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose lines all carry `fields` as well. */
  child(fields: LogFields): Logger;
}

/** A logger for `component`; level from `MCP_CLUSTER_LOG_LEVEL` (default `info`). */
export function createLogger(component: string, base: LogFields = {}): Logger {
  const envLevel = process.env.MCP_CLUSTER_LOG_LEVEL as LogLevel | undefined;
  const min = RANK[envLevel && envLevel in RANK ? envLevel : 'info'];
  const write = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    const line: Record<string, unknown> = {
      time: new Date().toISOString(),
      level,
      component,
      msg,
      ...base,
      ...fields,
    };
    const err = line.err;
    if (err instanceof Error)
      line.err = { message: err.message, name: err.name, code: (err as { code?: unknown }).code };
    process.stderr.write(`${JSON.stringify(line)}\n`);
  };
  return {
    debug: (msg, fields) => write('debug', msg, fields),
    info: (msg, fields) => write('info', msg, fields),
    warn: (msg, fields) => write('warn', msg, fields),
    error: (msg, fields) => write('error', msg, fields),
    child: (fields) => createLogger(component, { ...base, ...fields }),
  };
}
