import { ClusterError } from '../core/index.js';

// The OTEL_* settings of a role, read without loading the OpenTelemetry SDK.

/** The process's tracing, once set up: flushes and stops the exporter. */
export interface Tracing {
  /** Exports what is still buffered (bounded by `OTEL_BSP_EXPORT_TIMEOUT`) and stops. */
  shutdown(): Promise<void>;
}

/** Why tracing is on or off, as `tracingSettingsOf` read the environment. */
export type TracingSettings =
  | { enabled: false }
  | {
      enabled: true;
      /** The exporter's URL when set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`). */
      endpoint: string | undefined;
      /** OTLP/HTTP encoding (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`; default http/protobuf). */
      protocol: 'http/protobuf' | 'http/json';
      /** `OTEL_TRACES_SAMPLER` (default parentbased_always_on) and its ratio (`OTEL_TRACES_SAMPLER_ARG`, default 1). */
      sampler: SamplerSetting;
      /** Warnings to log at start (settings read but not honoured as written). */
      warnings: string[];
    };

/** The sampler the environment names. */
export interface SamplerSetting {
  name: string;
  ratio: number;
}

/** Environment variables, as `process.env` holds them. */
export type Env = Readonly<Record<string, string | undefined>>;

const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
];

/**
 * Reads the standard `OTEL_*` variables. Tracing is on when `OTEL_TRACES_EXPORTER` is `otlp` or an
 * OTLP endpoint is set, and off when neither is, when `OTEL_TRACES_EXPORTER=none`, or when
 * `OTEL_SDK_DISABLED=true`. Throws INVALID_CONFIG, naming the variable, for a value that cannot be
 * honoured (an exporter or protocol this build lacks, an endpoint that is not an http(s) URL, an
 * unknown sampler or a ratio outside [0, 1]): a bad setting stops the role at start, never a call.
 */
export function tracingSettingsOf(env: Env): TracingSettings {
  const value = (name: string) => {
    const raw = env[name]?.trim();
    return raw ? raw : undefined;
  };
  if (value('OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return { enabled: false };
  const exporter = value('OTEL_TRACES_EXPORTER')?.toLowerCase();
  const specific = value('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const general = value('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (exporter === 'none') return { enabled: false };
  if (exporter !== undefined && exporter !== 'otlp') {
    throw new ClusterError(
      'INVALID_CONFIG',
      `OTEL_TRACES_EXPORTER=${exporter} is not supported: use otlp (OTLP over HTTP) or none`,
    );
  }
  if (exporter === undefined && specific === undefined && general === undefined) return { enabled: false };

  const warnings: string[] = [];
  for (const [name, url] of [
    ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', specific],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', general],
  ] as const) {
    if (url === undefined) continue;
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:'))
      throw new ClusterError('INVALID_CONFIG', `${name}=${url} is not an http:// or https:// URL`);
  }
  const protocolName = value('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL')
    ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'
    : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const protocol = value(protocolName) ?? 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${protocolName}=${protocol} is not supported: traces are exported over OTLP/HTTP (http/protobuf, the default, or http/json)`,
    );
  }
  const endpoint = specific ?? (general ? `${general.replace(/\/+$/, '')}/v1/traces` : undefined);
  return { enabled: true, endpoint, protocol, sampler: samplerOf(env), warnings };
}

/** The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name (default parentbased_always_on). */
function samplerOf(env: Env): SamplerSetting {
  const name = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase() || 'parentbased_always_on';
  if (!SAMPLERS.includes(name)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `OTEL_TRACES_SAMPLER=${name} is not a sampler this build has (have: ${SAMPLERS.join(', ')})`,
    );
  }
  const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  if (!arg || !name.endsWith('traceidratio')) return { name, ratio: 1 };
  const ratio = Number(arg);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1)
    throw new ClusterError(
      'INVALID_CONFIG',
      `OTEL_TRACES_SAMPLER_ARG=${arg} must be a ratio between 0 and 1 for ${name}`,
    );
  return { name, ratio };
}

/** A positive integer `OTEL_BSP_*` setting, or undefined (the SDK's default) with a warning. */
export function bspNumber(env: Env, name: string, warnings: string[]): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const parsed = Number(raw);
  if (Number.isInteger(parsed) && parsed > 0) return parsed;
  warnings.push(`${name}=${raw} is not a positive integer; using the default`);
  return undefined;
}
