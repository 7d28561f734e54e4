import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ClusterError, type ResolvedConfig } from '../core/index.js';
import { families } from './families.js';

/**
 * What a command's run returns: the process exit code (0 done, 1 failure, 2 bad configuration or
 * usage), or {@link SERVING} for a long-running role, which exits on SIGTERM/SIGINT.
 */
export type ExitCode = number;
/** A role is serving: the process stays up until a signal stops it. */
export const SERVING: ExitCode = -1;

/** The flags every role takes. */
export const COMMON = {
  config: { type: 'string' },
  broker: { type: 'string' },
  port: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/** Parses a command's flags; a bad flag is INVALID_CONFIG (exit 2) pointing at `--help`. */
export function parse<T extends OptionSpec>(args: string[], options: T) {
  try {
    // No command takes positional arguments: a stray one (`config check my.yaml`) is an error, not ignored.
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `${(err as Error).message} (see mcp-cluster --help)`, {
      cause: err,
    });
  }
}

/** A port flag's value as given (checked to be 0-65535), or undefined when absent. */
export function portFlag(value: string | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) > 65535) {
    throw new ClusterError('INVALID_CONFIG', `${flag} must be a port number 0-65535, got "${value}"`);
  }
  return value;
}

/** The flags that choose the configuration. */
export interface ConfigFlags {
  config?: string | undefined;
  broker?: string | undefined;
}

/** The file named by `--config`, else by `$MCP_CLUSTER_CONFIG`; undefined for the built-in defaults. */
export function configPathOf(values: ConfigFlags): string | undefined {
  return values.config ?? process.env.MCP_CLUSTER_CONFIG;
}

/**
 * The configuration of a command: the file of {@link configPathOf}, then the environment, then
 * `env` (the command's flags as their environment variables), then `--broker`.
 */
export function configFrom(values: ConfigFlags, env: Record<string, string | undefined>): ResolvedConfig {
  const merged = { ...process.env, ...env };
  if (values.broker !== undefined) merged.MCP_CLUSTER_BROKER_URL = values.broker;
  return families.loadConfig(configPathOf(values), merged);
}

/**
 * Whether the broker was chosen rather than left at its `memory:` default: by `--broker`,
 * `MCP_CLUSTER_BROKER_URL` or `broker.url` in the configuration file.
 */
export function brokerChosen(values: ConfigFlags): boolean {
  if (values.broker !== undefined && values.broker !== '') return true;
  if (process.env.MCP_CLUSTER_BROKER_URL) return true;
  const path = configPathOf(values);
  if (!path) return false;
  // configFrom has read and validated this file already; only whether it names a broker is asked here.
  const doc = parseYaml(readFileSync(path, 'utf8')) as { broker?: { url?: unknown } } | null;
  return doc?.broker?.url !== undefined;
}
