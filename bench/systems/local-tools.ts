import {
  buildCatalog,
  ClusterError,
  encodeArguments,
  newCallId,
  type PoolConfig,
  type ResolvedConfig,
  type ToolConfig,
  type ToolDefinition,
  toClusterError,
  toToolErrorResult,
} from '../../services/core/index.js';
import { createEmbedAdapter, type EmbedToolSettings, embedSettings } from '../../workers/embeddings/index.js';
import { inferenceAdapters } from '../../workers/inference/index.js';
import type { ToolAdapter, ToolProgress, ToolResult } from '../../workers/runtime/index.js';

// The tools of the single-process servers (direct, peer): the cluster workers' own adapters,
// called in the request's process with no queue, no delivery stream and no backend actor. Embed
// forwards each call as one backend request (no micro-batching across calls, no result cache),
// which is what a plain MCP server that calls the backend itself does.

/** Tools every system serves. */
export const BENCH_TOOLS = ['generate_text', 'embed'] as const;

/** Backend requests one endpoint may have in flight from the per-call embed adapter: unbounded in practice. */
const UNBOUNDED_BATCHES = 1_000_000;

/** How one call is run. */
export interface LocalCallOptions {
  /** Client gone, cancelled: aborts the backend request. */
  signal: AbortSignal;
  /** Backend-affinity key (forwarded as the OpenAI `user` field, as the cluster does). */
  sessionKey?: string;
  /** Progress of the call (the text so far), at most every 100 ms; omitted: no progress. */
  onProgress?: (progress: ToolProgress) => void;
}

/** The tools of one single-process server. */
export interface LocalTools {
  /** The catalog entries (`tools/list`), the same as the cluster's. */
  readonly definitions: ToolDefinition[];
  /** The tool's configuration, or undefined for a name not served. */
  config(name: string): ToolConfig | undefined;
  /**
   * Runs a call whose arguments were validated, within the tool's deadline. Never rejects: a
   * failure is a tool result with `isError`, like the cluster's.
   */
  run(name: string, args: Record<string, unknown>, options: LocalCallOptions): Promise<ToolResult>;
}

/** The tools of `config` served in process against its pools' first endpoints. */
export function localTools(config: ResolvedConfig): LocalTools {
  const tools = config.tools.filter((t) => (BENCH_TOOLS as readonly string[]).includes(t.name));
  const byName = new Map(tools.map((t) => [t.name, perCall(t)]));
  const embed = createEmbedAdapter({ cache: false, maxBatchesInFlight: UNBOUNDED_BATCHES });
  const adapterOf = (tool: ToolConfig): ToolAdapter =>
    tool.template === 'embed' ? embed : inferenceAdapters[tool.template as keyof typeof inferenceAdapters];
  const poolOf = (tool: ToolConfig): PoolConfig => config.pools[tool.pool] as PoolConfig;

  return {
    definitions: buildCatalog(tools),
    config: (name) => byName.get(name),
    async run(name, args, options) {
      const tool = byName.get(name);
      if (!tool) throw new Error(`no tool ${name}`);
      const pool = poolOf(tool);
      const endpoint = pool.endpoints[0];
      if (!endpoint) throw new Error(`pool ${pool.name} has no endpoint`);
      const now = Date.now();
      const deadline = AbortSignal.timeout(tool.deadlineMs);
      const signal = AbortSignal.any([options.signal, deadline]);
      try {
        return await adapterOf(tool).run({
          call: {
            callId: newCallId(),
            tool: tool.name,
            pool: tool.pool,
            argumentsJson: encodeArguments(args),
            tenant: 'default',
            sessionKey: options.sessionKey ?? '',
            priority: 'normal',
            deadlineUnixMs: now + tool.deadlineMs,
            attempt: 1,
            replyTo: '',
            traceContext: {},
            enqueuedUnixMs: now,
            wantsProgress: options.onProgress !== undefined,
            principal: 'anonymous',
            scopes: [],
          },
          arguments: args,
          tool,
          endpointUrl: endpoint.url,
          backend: pool.backend,
          signal,
          backendTimeoutMs: pool.backendTimeoutMs,
          progress: options.onProgress ?? (() => {}),
          log: () => {},
        });
      } catch (err) {
        const error =
          deadline.aborted && !options.signal.aborted
            ? new ClusterError(
                'DEADLINE_EXCEEDED',
                `the call took longer than its deadline of ${tool.deadlineMs} ms`,
              )
            : toClusterError(err);
        return toToolErrorResult(error) as ToolResult;
      }
    },
  };
}

/** The tool with micro-batching off: every call's texts go out at once, as one request. */
function perCall(tool: ToolConfig): ToolConfig {
  if (tool.template !== 'embed') return tool;
  const settings = embedSettings.of(tool);
  const unbatched: ToolConfig & EmbedToolSettings = {
    ...tool,
    ...settings,
    batch: { maxSize: settings.maxTexts, maxTokens: 1_000_000_000, maxWaitMs: 0, backgroundPauseMs: 0 },
  };
  return unbatched;
}
