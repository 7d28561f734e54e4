import { context, DiagLogLevel, diag, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufExporter } from '@opentelemetry/exporter-trace-otlp-proto';
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
  const exporterOptions = settings.endpoint ? { url: settings.endpoint } : {};
  const exporter =
    settings.protocol === 'http/json'
      ? new JsonExporter(exporterOptions)
      : new ProtobufExporter(exporterOptions);
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
  // Carries the active span across `await`s, so a backend request deep in an adapter has its call's span.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  enableCallTracing();
  for (const warning of warnings) logger.warn(warning);
  logger.info('tracing on', {
    endpoint: settings.endpoint ?? 'http://localhost:4318/v1/traces',
    protocol: settings.protocol,
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
