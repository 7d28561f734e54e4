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
import { enableCallTracing, type Logger } from '../core/index.js';
import {
  bspNumber,
  type Env,
  type SamplerSetting,
  type Tracing,
  type TracingSettings,
} from './tracing-settings.js';

// The OpenTelemetry SDK, loaded by `startTracing` only when the OTEL_* settings turn tracing on.

function samplerFor(setting: SamplerSetting): Sampler {
  switch (setting.name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(setting.ratio);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(setting.ratio) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
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

/** Builds and registers the SDK for `settings` (see `startTracing`). */
export function startTracingSdk(
  role: string,
  settings: Extract<TracingSettings, { enabled: true }>,
  env: Env,
  logger: Logger,
): Tracing {
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
    sampler: samplerFor(settings.sampler),
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
  enableCallTracing();
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
