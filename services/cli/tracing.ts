import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Context,
  type ContextManager,
  context,
  DiagLogLevel,
  diag,
  propagation,
  ROOT_CONTEXT,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  defaultResource,
  detectResources,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
  serviceNameEnvDetector,
} from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { ClusterError, createLogger, type Logger } from '../core/index.js';

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
      sampler: Sampler;
      /** Warnings to log at start (settings read but not honoured as written). */
      warnings: string[];
    };

type Env = Readonly<Record<string, string | undefined>>;

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
  const protocol = value(protocolName);
  if (protocol === 'http/protobuf') {
    // Every OTLP/HTTP receiver takes both encodings on the same path.
    warnings.push(`${protocolName}=http/protobuf: this build exports OTLP/HTTP as JSON (http/json)`);
  } else if (protocol !== undefined && protocol !== 'http/json') {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${protocolName}=${protocol} is not supported: traces are exported over OTLP/HTTP (http/json; http/protobuf is read as http/json)`,
    );
  }
  const endpoint = specific ?? (general ? `${general.replace(/\/+$/, '')}/v1/traces` : undefined);
  return { enabled: true, endpoint, sampler: samplerOf(env), warnings };
}

/** The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name (default parentbased_always_on). */
function samplerOf(env: Env): Sampler {
  const name = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase() || 'parentbased_always_on';
  if (!SAMPLERS.includes(name)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `OTEL_TRACES_SAMPLER=${name} is not a sampler this build has (have: ${SAMPLERS.join(', ')})`,
    );
  }
  const ratio = () => {
    const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
    if (!arg) return 1;
    const parsed = Number(arg);
    if (!Number.isFinite(parsed) || parsed < 0 || parsed > 1)
      throw new ClusterError(
        'INVALID_CONFIG',
        `OTEL_TRACES_SAMPLER_ARG=${arg} must be a ratio between 0 and 1 for ${name}`,
      );
    return parsed;
  };
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio());
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** A positive integer `OTEL_BSP_*` setting, or undefined (the SDK's default) with a warning. */
function bspNumber(env: Env, name: string, warnings: string[]): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const parsed = Number(raw);
  if (Number.isInteger(parsed) && parsed > 0) return parsed;
  warnings.push(`${name}=${raw} is not a positive integer; using the default`);
  return undefined;
}

/**
 * Carries the active OpenTelemetry context across `await`s with Node's AsyncLocalStorage, so a
 * backend request made deep in an adapter carries the span of the call that made it.
 */
class AsyncLocalContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const run = (...args: unknown[]) => this.storage.run(ctx, () => target.apply(undefined, args));
    return run as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

/**
 * Sets up tracing for the role `role` from the `OTEL_*` environment (see `tracingSettingsOf`):
 * the OTLP/HTTP exporter behind a batch span processor, the sampler, the resource
 * (`service.name` from `OTEL_SERVICE_NAME`, else `mcp-cluster-<role>`, plus
 * `OTEL_RESOURCE_ATTRIBUTES`), the W3C trace-context propagator and an async context manager,
 * registered as the API's globals. Returns undefined and registers nothing when tracing is off:
 * the call path then runs against the API's no-op tracer.
 */
export function startTracing(role: string, env: Env = process.env, log?: Logger): Tracing | undefined {
  const settings = tracingSettingsOf(env);
  if (!settings.enabled) return undefined;
  const logger = log ?? createLogger('tracing');
  // The SDK's own complaints (an export that failed, a dropped span) reach the JSON log.
  diag.setLogger(
    {
      error: (message, ...args) => logger.warn(`opentelemetry: ${message}`, { detail: args.map(String) }),
      warn: (message, ...args) => logger.warn(`opentelemetry: ${message}`, { detail: args.map(String) }),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
  const warnings = [...settings.warnings];
  const detected = detectResources({ detectors: [resourceAttributesEnvDetector, serviceNameEnvDetector] });
  if (
    env.OTEL_RESOURCE_ATTRIBUTES?.trim() &&
    Object.keys(resourceAttributesEnvDetector.detect().attributes ?? {}).length === 0
  )
    warnings.push(
      'OTEL_RESOURCE_ATTRIBUTES is not a list of key=value pairs (values percent-encoded); ignored',
    );
  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: `mcp-cluster-${role}`,
        [ATTR_SERVICE_VERSION]: '0.1.0',
      }),
    )
    .merge(detected);
  const exporter = new OTLPTraceExporter(settings.endpoint ? { url: settings.endpoint } : {});
  const scheduledDelayMillis = bspNumber(env, 'OTEL_BSP_SCHEDULE_DELAY', warnings);
  const maxQueueSize = bspNumber(env, 'OTEL_BSP_MAX_QUEUE_SIZE', warnings);
  const maxExportBatchSize = bspNumber(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', warnings);
  const exportTimeoutMillis = bspNumber(env, 'OTEL_BSP_EXPORT_TIMEOUT', warnings);
  const provider = new TracerProvider({
    resource,
    sampler: settings.sampler,
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        ...(scheduledDelayMillis ? { scheduledDelayMillis } : {}),
        ...(maxQueueSize ? { maxQueueSize } : {}),
        ...(maxExportBatchSize ? { maxExportBatchSize } : {}),
        ...(exportTimeoutMillis ? { exportTimeoutMillis } : {}),
      }),
    ],
  });
  context.setGlobalContextManager(new AsyncLocalContextManager());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  for (const warning of warnings) logger.warn(warning);
  logger.info('tracing on', {
    endpoint: settings.endpoint ?? 'http://localhost:4318/v1/traces',
    serviceName: String(resource.attributes[ATTR_SERVICE_NAME] ?? ''),
  });
  return {
    async shutdown() {
      await provider
        .shutdown()
        .catch((err: unknown) => logger.warn('trace export at shutdown failed', { err }));
    },
  };
}
