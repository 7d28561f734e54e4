import { createLogger, type Logger } from '../core/index.js';
import { type Env, type Tracing, tracingSettingsOf } from './tracing-settings.js';

export type { Tracing, TracingSettings } from './tracing-settings.js';
export { tracingSettingsOf } from './tracing-settings.js';

/**
 * Sets up tracing for the role `role` from the `OTEL_*` environment (see `tracingSettingsOf`):
 * the OTLP/HTTP exporter behind a batch span processor, the sampler, the resource
 * (`service.name` from `OTEL_SERVICE_NAME`, else `mcp-cluster-<role>`, plus
 * `OTEL_RESOURCE_ATTRIBUTES`), the W3C trace-context propagator and an async context manager,
 * registered as the API's globals. Resolves with undefined and loads nothing when tracing is off:
 * the SDK is imported only when tracing is on, and the call path runs against the API's no-op tracer.
 */
export async function startTracing(
  role: string,
  env: Env = process.env,
  log?: Logger,
): Promise<Tracing | undefined> {
  const settings = tracingSettingsOf(env);
  if (!settings.enabled) return undefined;
  const { startTracingSdk } = await import('./tracing-sdk.js');
  return startTracingSdk(role, settings, env, log ?? createLogger('tracing'));
}
