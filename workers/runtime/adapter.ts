import {
  type BackendKind,
  ClusterError,
  INPUT_CAPABILITY,
  type InputMethod,
  type InputRequiredResult,
  type McpLogLevel,
  type ToolCall,
  type ToolConfig,
  type ToolResult,
} from '../../services/core/index.js';

// The contract between the worker runtime and a tool family's adapters: what an adapter gets for
// one call and what it gives back.

export type { InputRequiredResult, ToolResult };

/**
 * Multi-round-trip input (MCP `InputRequiredResult`): a tool that needs its caller's input returns
 * `inputRequired({ key: request }, state)`; the caller answers and calls again, and the tool runs
 * again from the start with the answers and its state here. Both rounds may run on different
 * workers (and the caller's rounds reach different ingress replicas): keep what the tool needs in
 * `state`, never in the worker's memory.
 */
export interface CallInput {
  /**
   * The caller's answers keyed by the keys the tool chose: bare `ElicitResult`,
   * `CreateMessageResult` or `ListRootsResult` objects. Empty on the first round. They come from
   * the caller: check them as strictly as arguments (a missing or malformed answer is best asked
   * for again).
   */
  responses: Readonly<Record<string, unknown>>;
  /** The `requestState` the tool returned in the previous round, as it wrote it; undefined on the first round. */
  state: string | undefined;
  /**
   * Whether the caller declared the client capability `method` needs (`elicitation`, `sampling`,
   * `roots`). True when the caller's capabilities are unknown (a 2025-era session, asked by the
   * ingress on its stream: a client without the capability answers with an error).
   */
  canAsk(method: InputMethod): boolean;
}

/** The `CallInput` of one delivery of `call`. */
export function callInputOf(call: ToolCall): CallInput {
  let responses: Record<string, unknown> = {};
  if (call.inputResponsesJson) {
    // The ingress wrote it from a JSON object; anything else is a broken envelope.
    const parsed: unknown = JSON.parse(call.inputResponsesJson);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new ClusterError('INVALID_ARGUMENTS', 'inputResponses must be an object');
    responses = parsed as Record<string, unknown>;
  }
  let capabilities: Record<string, unknown> | undefined;
  if (call.clientCapabilitiesJson) {
    const parsed: unknown = JSON.parse(call.clientCapabilitiesJson);
    if (typeof parsed === 'object' && parsed !== null) capabilities = parsed as Record<string, unknown>;
  }
  return {
    responses,
    state: call.requestState ?? undefined,
    canAsk: (method) => {
      if (!capabilities) return true;
      const declared = capabilities[INPUT_CAPABILITY[method]];
      return typeof declared === 'object' && declared !== null;
    },
  };
}

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
  /**
   * The caller's answers and the tool's state after an `InputRequiredResult` (see
   * {@link CallInput}). The worker always sets it; absent (read as a first round) where an adapter
   * is driven directly, as benches do.
   */
  input?: CallInput;
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
export interface ToolAdapter<R extends ToolResult | InputRequiredResult = ToolResult> {
  /**
   * Resolves with the call's result. An adapter typed `ToolAdapter<ToolResult | InputRequiredResult>`
   * may resolve with an `InputRequiredResult` instead, when it needs the caller's input first.
   */
  run(ctx: AdapterContext): Promise<R>;
  /**
   * Checks and loads what a tool needs before the worker takes calls (e.g. a workflow file), so a
   * bad setting stops the worker at start with INVALID_CONFIG instead of failing the first call.
   */
  prepare?(tool: ToolConfig): Promise<void>;
}

/** An adapter that may ask its caller for input: what the worker runs (every `ToolAdapter` is one). */
export type InputToolAdapter = ToolAdapter<ToolResult | InputRequiredResult>;
