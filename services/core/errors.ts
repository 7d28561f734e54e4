/**
 * Every failure mcp-cluster reports carries one of these codes. Branch on the code, never on
 * the message text. The mapping to JSON-RPC, MCP tool results and gRPC status lives here alone.
 */
export type ClusterErrorCode =
  /** The request or its arguments are malformed; the caller must change it. */
  | 'INVALID_ARGUMENTS'
  /** No tool of that name in the catalog. */
  | 'UNKNOWN_TOOL'
  /** The `Mcp-Session-Id` was not minted by this cluster (forged, altered, or another secret's). */
  | 'UNKNOWN_SESSION'
  /** No batch job, task or file of that id belongs to the caller's tenant (absent, deleted or another's). */
  | 'UNKNOWN_JOB'
  /** The configuration file or an override is invalid; names the setting. */
  | 'INVALID_CONFIG'
  /** The broker (NATS, Redis) cannot be reached or refused the operation. */
  | 'QUEUE_UNAVAILABLE'
  /** The call's absolute deadline passed before it finished. */
  | 'DEADLINE_EXCEEDED'
  /** The caller (or an operator) cancelled the call. */
  | 'CANCELLED'
  /** No healthy backend could take the call, or the backend failed. */
  | 'BACKEND_UNAVAILABLE'
  /** The backend answered, but not in its protocol (bad JSON, missing fields). */
  | 'BACKEND_PROTOCOL'
  /** The owning ingress replica is gone; the answer has nowhere to go. */
  | 'UNDELIVERABLE'
  /** A queued envelope could not be decoded. */
  | 'BAD_ENVELOPE'
  /** The process is draining and takes no new work. */
  | 'SHUTTING_DOWN'
  /**
   * The caller's tenant is over one of its limits on the pool (rate or concurrency): refused at
   * the ingress before anything was queued. HTTP 429 with `Retry-After`; retry after that time.
   */
  | 'RATE_LIMITED'
  /**
   * The pool's expected queue wait exceeds the call's remaining deadline: refused at the ingress
   * before anything was queued. HTTP 503 with `Retry-After`; retryable (later, or with a longer deadline).
   */
  | 'OVERLOADED'
  /**
   * The `requestState` a caller echoed to continue a call that asked for its input failed its
   * signature check, expired, or was minted for another tool or caller. JSON-RPC -32602; start
   * the call again without it.
   */
  | 'INVALID_REQUEST_STATE'
  /**
   * The tool asked for input (elicitation, sampling, roots) the caller did not declare it can
   * give in its client capabilities. MCP's -32021 with `data.requiredCapabilities`, HTTP 400.
   */
  | 'MISSING_CLIENT_CAPABILITY'
  /**
   * An `Mcp-Param-*` header is missing, malformed or disagrees with the argument it mirrors (a
   * tool's `x-mcp-header`). MCP's -32020 (HeaderMismatch), HTTP 400.
   */
  | 'HEADER_MISMATCH'
  /** A bug: an invariant did not hold. */
  | 'INTERNAL';

/** A failure with a code, a message a person can act on, and the underlying cause. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError';
  /** When a retry may succeed, in milliseconds from now (RATE_LIMITED, OVERLOADED); else undefined. */
  readonly retryAfterMs: number | undefined;
  constructor(
    readonly code: ClusterErrorCode,
    message: string,
    options?: { cause?: unknown; retryAfterMs?: number; data?: Record<string, unknown> },
  ) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
    this.data = options?.data;
  }
  /** Extra members of the JSON-RPC error's `data` (e.g. `requiredCapabilities`); undefined for most errors. */
  readonly data: Record<string, unknown> | undefined;
}

/** Wraps any thrown value as a ClusterError, keeping ClusterErrors as they are. */
export function toClusterError(err: unknown, fallback: ClusterErrorCode = 'INTERNAL'): ClusterError {
  if (err instanceof ClusterError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ClusterError(fallback, message, { cause: err });
}

/** JSON-RPC error codes used on the MCP wire: the JSON-RPC 2.0 ones and MCP's server-defined ones. */
export const JSON_RPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  /** MCP's server-defined code for a session id the server does not know (answered with HTTP 404). */
  SESSION_NOT_FOUND: -32001,
  /**
   * mcp-cluster's server-defined codes (JSON-RPC leaves -32000..-32099 to the implementation):
   * a tenant over its limit (answered with HTTP 429), and a pool whose queue wait exceeds the
   * call's deadline (HTTP 503). The numbers echo the HTTP statuses.
   */
  RATE_LIMITED: -32029,
  OVERLOADED: -32053,
  /** MCP's code for a request that needs a client capability the caller did not declare (HTTP 400). */
  MISSING_CLIENT_CAPABILITY: -32021,
  /** MCP's code for request headers that disagree with the body (HTTP 400). */
  HEADER_MISMATCH: -32020,
} as const;

/**
 * Whether the error is reported as a JSON-RPC protocol error (the request itself was wrong)
 * rather than as a tool result with `isError: true` (the tool ran, or tried to, and failed).
 * Per MCP: unknown tools are protocol errors; everything a model could react to is a tool error.
 */
export function isProtocolError(code: ClusterErrorCode): boolean {
  return (
    code === 'UNKNOWN_TOOL' ||
    code === 'UNKNOWN_SESSION' ||
    code === 'UNKNOWN_JOB' ||
    // Refusals at admission answer the HTTP request itself (429 / 503 with Retry-After).
    code === 'RATE_LIMITED' ||
    code === 'OVERLOADED' ||
    // The caller's continuation or capabilities were wrong, not the tool.
    code === 'INVALID_REQUEST_STATE' ||
    code === 'MISSING_CLIENT_CAPABILITY' ||
    code === 'HEADER_MISMATCH'
  );
}

/**
 * The HTTP status of a request refused with this error, where it has its own: 429 for RATE_LIMITED,
 * 503 for OVERLOADED; undefined for the others (answered 200 with a JSON-RPC error or tool result).
 */
export function httpStatusOf(code: ClusterErrorCode): number | undefined {
  if (code === 'RATE_LIMITED') return 429;
  if (code === 'OVERLOADED') return 503;
  if (code === 'MISSING_CLIENT_CAPABILITY' || code === 'HEADER_MISMATCH') return 400;
  return undefined;
}

/** The `Retry-After` header value (whole seconds, at least 1) of an error that carries `retryAfterMs`. */
export function retryAfterSeconds(err: ClusterError): string | undefined {
  return err.retryAfterMs === undefined ? undefined : String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
}

/**
 * The JSON-RPC error object for a ClusterError; `data.retryAfterMs` when the error says when to
 * retry (RATE_LIMITED, OVERLOADED), and the error's own `data` members (e.g.
 * `requiredCapabilities` of MISSING_CLIENT_CAPABILITY).
 */
export function toJsonRpcError(err: ClusterError): {
  code: number;
  message: string;
  data: { code: string; retryAfterMs?: number; [member: string]: unknown };
} {
  return {
    code: jsonRpcCodeOf(err.code),
    message: err.message,
    data: {
      ...err.data,
      code: err.code,
      ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: Math.ceil(err.retryAfterMs) }),
    },
  };
}

function jsonRpcCodeOf(code: ClusterErrorCode): number {
  switch (code) {
    case 'UNKNOWN_TOOL':
    case 'UNKNOWN_JOB':
    case 'INVALID_ARGUMENTS':
    case 'INVALID_REQUEST_STATE':
      return JSON_RPC.INVALID_PARAMS;
    case 'MISSING_CLIENT_CAPABILITY':
      return JSON_RPC.MISSING_CLIENT_CAPABILITY;
    case 'HEADER_MISMATCH':
      return JSON_RPC.HEADER_MISMATCH;
    case 'UNKNOWN_SESSION':
      return JSON_RPC.SESSION_NOT_FOUND;
    case 'RATE_LIMITED':
      return JSON_RPC.RATE_LIMITED;
    case 'OVERLOADED':
      return JSON_RPC.OVERLOADED;
    default:
      return JSON_RPC.INTERNAL_ERROR;
  }
}

/** An MCP `CallToolResult` with `isError: true` that tells the caller (often a model) what happened. */
export function toToolErrorResult(err: ClusterError): {
  content: { type: 'text'; text: string }[];
  isError: true;
  _meta: { 'mcp-cluster/error-code': ClusterErrorCode };
} {
  return {
    content: [{ type: 'text', text: `${err.code}: ${err.message}` }],
    isError: true,
    _meta: { 'mcp-cluster/error-code': err.code },
  };
}

/** gRPC status codes (numeric values of `@grpc/grpc-js` `status`), kept here so core stays transport-free. */
const GRPC_STATUS: Record<ClusterErrorCode, number> = {
  INVALID_ARGUMENTS: 3, // INVALID_ARGUMENT
  UNKNOWN_TOOL: 5, // NOT_FOUND
  UNKNOWN_SESSION: 5, // NOT_FOUND
  UNKNOWN_JOB: 5, // NOT_FOUND
  INVALID_CONFIG: 9, // FAILED_PRECONDITION
  QUEUE_UNAVAILABLE: 14, // UNAVAILABLE
  DEADLINE_EXCEEDED: 4, // DEADLINE_EXCEEDED
  CANCELLED: 1, // CANCELLED
  BACKEND_UNAVAILABLE: 14, // UNAVAILABLE
  BACKEND_PROTOCOL: 13, // INTERNAL
  UNDELIVERABLE: 14, // UNAVAILABLE
  BAD_ENVELOPE: 3, // INVALID_ARGUMENT
  SHUTTING_DOWN: 14, // UNAVAILABLE
  RATE_LIMITED: 8, // RESOURCE_EXHAUSTED
  OVERLOADED: 14, // UNAVAILABLE
  INVALID_REQUEST_STATE: 3, // INVALID_ARGUMENT
  MISSING_CLIENT_CAPABILITY: 9, // FAILED_PRECONDITION
  HEADER_MISMATCH: 3, // INVALID_ARGUMENT
  INTERNAL: 13, // INTERNAL
};

/** The gRPC status code for a ClusterError. */
export function toGrpcStatus(code: ClusterErrorCode): number {
  return GRPC_STATUS[code];
}

const CODES = new Set<string>(Object.keys(GRPC_STATUS));

/** Reads a code sent over the wire (e.g. in a delivery error chunk); unknown codes become INTERNAL. */
export function parseErrorCode(value: string): ClusterErrorCode {
  return CODES.has(value) ? (value as ClusterErrorCode) : 'INTERNAL';
}

/**
 * Whether a failure is worth retrying: on another delivery (another worker or backend may
 * succeed), or, for the refusals at admission (RATE_LIMITED, OVERLOADED), by the caller after the
 * `Retry-After` they carry.
 */
export function isRetryable(code: ClusterErrorCode): boolean {
  return (
    code === 'BACKEND_UNAVAILABLE' ||
    code === 'QUEUE_UNAVAILABLE' ||
    code === 'SHUTTING_DOWN' ||
    code === 'RATE_LIMITED' ||
    code === 'OVERLOADED'
  );
}
