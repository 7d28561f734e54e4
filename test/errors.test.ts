import { status as grpcStatus } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  ClusterError,
  type ClusterErrorCode,
  httpStatusOf,
  isProtocolError,
  isRetryable,
  JSON_RPC,
  parseErrorCode,
  retryAfterSeconds,
  toClusterError,
  toGrpcStatus,
  toJsonRpcError,
  toToolErrorResult,
} from '../services/core/index.js';

/** Every code with the gRPC status it documents; a Record so a new code fails to compile here. */
const EXPECTED_GRPC: Record<ClusterErrorCode, grpcStatus> = {
  INVALID_ARGUMENTS: grpcStatus.INVALID_ARGUMENT,
  UNKNOWN_TOOL: grpcStatus.NOT_FOUND,
  UNKNOWN_SESSION: grpcStatus.NOT_FOUND,
  UNKNOWN_JOB: grpcStatus.NOT_FOUND,
  INVALID_CONFIG: grpcStatus.FAILED_PRECONDITION,
  QUEUE_UNAVAILABLE: grpcStatus.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpcStatus.DEADLINE_EXCEEDED,
  CANCELLED: grpcStatus.CANCELLED,
  BACKEND_UNAVAILABLE: grpcStatus.UNAVAILABLE,
  BACKEND_PROTOCOL: grpcStatus.INTERNAL,
  UNDELIVERABLE: grpcStatus.UNAVAILABLE,
  BAD_ENVELOPE: grpcStatus.INVALID_ARGUMENT,
  SHUTTING_DOWN: grpcStatus.UNAVAILABLE,
  RATE_LIMITED: grpcStatus.RESOURCE_EXHAUSTED,
  OVERLOADED: grpcStatus.UNAVAILABLE,
  INVALID_REQUEST_STATE: grpcStatus.INVALID_ARGUMENT,
  MISSING_CLIENT_CAPABILITY: grpcStatus.FAILED_PRECONDITION,
  HEADER_MISMATCH: grpcStatus.INVALID_ARGUMENT,
  INTERNAL: grpcStatus.INTERNAL,
};
const CODES = Object.keys(EXPECTED_GRPC) as ClusterErrorCode[];

describe('ClusterError', () => {
  it('is an Error with a code, message, name and cause', () => {
    const cause = new Error('root');
    const err = new ClusterError('QUEUE_UNAVAILABLE', 'broker down', { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('ClusterError');
    expect(err.code).toBe('QUEUE_UNAVAILABLE');
    expect(err.message).toBe('broker down');
    expect(err.cause).toBe(cause);
    expect(err.stack).toContain('broker down');
  });
});

describe.each(CODES)('code %s', (code) => {
  const err = new ClusterError(code, `something about ${code}`);

  it('maps to a JSON-RPC error carrying the code', () => {
    const rpc = toJsonRpcError(err);
    expect(Object.values(JSON_RPC)).toContain(rpc.code);
    expect(rpc.code).toBe(
      code === 'UNKNOWN_TOOL' ||
        code === 'UNKNOWN_JOB' ||
        code === 'INVALID_ARGUMENTS' ||
        code === 'INVALID_REQUEST_STATE'
        ? JSON_RPC.INVALID_PARAMS
        : code === 'UNKNOWN_SESSION'
          ? JSON_RPC.SESSION_NOT_FOUND
          : code === 'RATE_LIMITED'
            ? JSON_RPC.RATE_LIMITED
            : code === 'OVERLOADED'
              ? JSON_RPC.OVERLOADED
              : code === 'MISSING_CLIENT_CAPABILITY'
                ? JSON_RPC.MISSING_CLIENT_CAPABILITY
                : code === 'HEADER_MISMATCH'
                  ? JSON_RPC.HEADER_MISMATCH
                  : JSON_RPC.INTERNAL_ERROR,
    );
    expect(rpc.message).toBe(err.message);
    expect(rpc.data).toEqual({ code });
  });

  it('maps to the documented gRPC status number', () => {
    expect(toGrpcStatus(code)).toBe(EXPECTED_GRPC[code]);
    expect(Number.isInteger(toGrpcStatus(code))).toBe(true);
    expect(toGrpcStatus(code)).not.toBe(grpcStatus.OK);
  });

  it('maps to an isError tool result with the code in _meta', () => {
    const result = toToolErrorResult(err);
    expect(result.isError).toBe(true);
    expect(result._meta).toEqual({ 'mcp-cluster/error-code': code });
    expect(result.content).toEqual([{ type: 'text', text: `${code}: something about ${code}` }]);
  });

  it('survives the wire as itself', () => {
    expect(parseErrorCode(code)).toBe(code);
  });
});

describe('JSON_RPC', () => {
  it('has the standard JSON-RPC 2.0 codes, MCP session-not-found and the refusals at admission', () => {
    expect(JSON_RPC).toEqual({
      PARSE_ERROR: -32700,
      INVALID_REQUEST: -32600,
      METHOD_NOT_FOUND: -32601,
      INVALID_PARAMS: -32602,
      INTERNAL_ERROR: -32603,
      SESSION_NOT_FOUND: -32001,
      RATE_LIMITED: -32029,
      OVERLOADED: -32053,
      MISSING_CLIENT_CAPABILITY: -32021,
      HEADER_MISMATCH: -32020,
    });
  });
});

describe('isProtocolError', () => {
  it('is true only for unknown tools, sessions and jobs, the refusals at admission and bad continuations', () => {
    expect(CODES.filter(isProtocolError)).toEqual([
      'UNKNOWN_TOOL',
      'UNKNOWN_SESSION',
      'UNKNOWN_JOB',
      'RATE_LIMITED',
      'OVERLOADED',
      'INVALID_REQUEST_STATE',
      'MISSING_CLIENT_CAPABILITY',
      'HEADER_MISMATCH',
    ]);
  });
});

describe('parseErrorCode', () => {
  it.each([
    '',
    'bogus',
    'internal',
    'Invalid_Arguments',
    ' CANCELLED',
    'CANCELLED ',
    '__proto__',
    'constructor',
    'toString',
  ])('reads unknown %j as INTERNAL', (value) => {
    expect(parseErrorCode(value)).toBe('INTERNAL');
  });
});

describe('toClusterError', () => {
  it('keeps a ClusterError as it is', () => {
    const err = new ClusterError('CANCELLED', 'stop');
    expect(toClusterError(err)).toBe(err);
    expect(toClusterError(err, 'BACKEND_UNAVAILABLE')).toBe(err);
  });

  it('wraps an Error as INTERNAL with its message and the error as cause', () => {
    const original = new TypeError('x is undefined');
    const wrapped = toClusterError(original);
    expect(wrapped).toBeInstanceOf(ClusterError);
    expect(wrapped.code).toBe('INTERNAL');
    expect(wrapped.message).toBe('x is undefined');
    expect(wrapped.cause).toBe(original);
  });

  it('uses the fallback code for foreign errors', () => {
    const original = new Error('ECONNREFUSED');
    const wrapped = toClusterError(original, 'BACKEND_UNAVAILABLE');
    expect(wrapped.code).toBe('BACKEND_UNAVAILABLE');
    expect(wrapped.cause).toBe(original);
  });

  it('wraps thrown non-errors, keeping them as cause', () => {
    expect(toClusterError('plain string')).toMatchObject({
      code: 'INTERNAL',
      message: 'plain string',
      cause: 'plain string',
    });
    expect(toClusterError(42).message).toBe('42');
    expect(toClusterError(undefined).message).toBe('undefined');
    const obj = { reason: 'odd' };
    expect(toClusterError(obj).cause).toBe(obj);
  });
});

describe('refusals at admission', () => {
  it('carry an HTTP status, a Retry-After in whole seconds and retryAfterMs in the JSON-RPC data', () => {
    const err = new ClusterError('RATE_LIMITED', 'over the rate', { retryAfterMs: 1200.4 });
    expect(httpStatusOf('RATE_LIMITED')).toBe(429);
    expect(httpStatusOf('OVERLOADED')).toBe(503);
    expect(httpStatusOf('INTERNAL')).toBeUndefined();
    expect(retryAfterSeconds(err)).toBe('2');
    expect(retryAfterSeconds(new ClusterError('OVERLOADED', 'x', { retryAfterMs: 10 }))).toBe('1');
    expect(toJsonRpcError(err).data).toEqual({ code: 'RATE_LIMITED', retryAfterMs: 1201 });
    expect(isProtocolError('RATE_LIMITED') && isProtocolError('OVERLOADED')).toBe(true);
  });
});

describe('input the caller cannot give', () => {
  it('is MCP -32021 with HTTP 400 and the missing capabilities as an object in the data', () => {
    const err = new ClusterError('MISSING_CLIENT_CAPABILITY', 'needs sampling', {
      data: { requiredCapabilities: { sampling: {} } },
    });
    expect(httpStatusOf('MISSING_CLIENT_CAPABILITY')).toBe(400);
    expect(toJsonRpcError(err)).toEqual({
      code: -32021,
      message: 'needs sampling',
      data: { code: 'MISSING_CLIENT_CAPABILITY', requiredCapabilities: { sampling: {} } },
    });
    // The error's own members never replace the code.
    const spoof = new ClusterError('INVALID_REQUEST_STATE', 'bad', { data: { code: 'OTHER' } });
    expect(toJsonRpcError(spoof)).toMatchObject({ code: -32602, data: { code: 'INVALID_REQUEST_STATE' } });
  });
});

describe('isRetryable', () => {
  it('is true exactly for failures another delivery may get past', () => {
    expect(CODES.filter(isRetryable).sort()).toEqual([
      'BACKEND_UNAVAILABLE',
      'OVERLOADED',
      'QUEUE_UNAVAILABLE',
      'RATE_LIMITED',
      'SHUTTING_DOWN',
    ]);
  });

  it('is false for caller mistakes and terminal outcomes', () => {
    for (const code of [
      'INVALID_ARGUMENTS',
      'UNKNOWN_TOOL',
      'DEADLINE_EXCEEDED',
      'CANCELLED',
      'BAD_ENVELOPE',
    ] as const) {
      expect(isRetryable(code)).toBe(false);
    }
  });
});
