import type {
  BackendKind,
  McpLogLevel,
  ToolCall,
  ToolConfig,
  ToolResult,
} from '../../services/core/index.js';

// The contract between the worker runtime and a tool family's adapters: what an adapter gets for
// one call and what it gives back.

export type { ToolResult };

/** Progress a tool reports while it runs. */
export interface ToolProgress {
  progress: number;
  /** Omitted when unknown. */
  total?: number;
  message?: string;
}

/** What an adapter gets for one call. */
export interface AdapterContext {
  call: ToolCall;
  /** The call's arguments, parsed once from `call.argumentsJson`. */
  arguments: Record<string, unknown>;
  tool: ToolConfig;
  /** Base URL of the backend endpoint the router chose. */
  endpointUrl: string;
  /** The protocol the pool's endpoints speak (e.g. `openai-embeddings` or `tei` for embed). */
  backend: BackendKind;
  /** Aborts on cancel, deadline, lost caller or shutdown; the adapter must abort its backend request. */
  signal: AbortSignal;
  /**
   * Time allowed until the backend's response headers, and between two events of a streamed
   * answer (a stalled stream must not hold a GPU slot forever), in milliseconds.
   */
  backendTimeoutMs: number;
  /** Reports progress; rate-limiting is the adapter's job. */
  progress(update: ToolProgress): void;
  /**
   * Sends an MCP log notification (`notifications/message`) to the caller, on the call's response
   * stream before its result. A no-op unless the caller asked for logs at `level` or above
   * (`logging/setLevel`, or the 2026-07-28 request's `_meta` level), and rate-limited per call
   * (a burst of 50, then 20 a second; the rest is dropped), so adapters call it freely.
   * @param data any JSON value (the notification's `data`)
   * @param logger the logger's name, shown to the caller; omitted when absent
   */
  log(level: McpLogLevel, data: unknown, logger?: string): void;
  /** Reports how long the call waited for its micro-batch to close, in milliseconds (batching adapters). */
  noteBatchWait?(ms: number): void;
}

/**
 * Runs one tool template against one backend protocol. Resolves with the result or rejects with
 * a ClusterError (BACKEND_UNAVAILABLE is retried on another delivery; others go to the caller).
 */
export interface ToolAdapter {
  run(ctx: AdapterContext): Promise<ToolResult>;
  /**
   * Checks and loads what a tool needs before the worker takes calls (e.g. a workflow file), so a
   * bad setting stops the worker at start with INVALID_CONFIG instead of failing the first call.
   */
  prepare?(tool: ToolConfig): Promise<void>;
}
