import {
  Client as ClientV2,
  ProtocolError,
  SdkError,
  SdkErrorCode,
  SdkHttpError,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import {
  StreamableHTTPError,
  StreamableHTTPClientTransport as TransportV1,
} from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';

/** The parts of a `tools/call` result the load generator reads. */
export interface CallOutcome {
  isError?: boolean;
  _meta?: Record<string, unknown>;
}

/** The `tools/call` parameters, built once per tool-mix entry and reused for every call. */
export interface CallParams {
  name: string;
  arguments: Record<string, unknown>;
}

/** One agent's MCP client connection, the same surface for both client generations. */
export interface LoadClient {
  call(params: CallParams): Promise<CallOutcome>;
  listTools(): Promise<string[]>;
  close(): Promise<void>;
}

const CLIENT_INFO = { name: 'mcp-cluster-load', version: '0.1.0' };
const noProgress = (): void => {};

/**
 * Connects one MCP client to `url`. `v2` is `@modelcontextprotocol/client` pinned to the
 * 2026-07-28 revision; `v1` is `@modelcontextprotocol/sdk` (2025 revisions: `initialize`, a
 * session id when the server gives one). The per-call options object is built once here, so a
 * call allocates nothing of ours beyond its promise.
 */
export async function connectLoadClient(
  kind: 'v1' | 'v2',
  url: string,
  callTimeoutMs: number,
  progress: boolean,
  connectTimeoutMs = callTimeoutMs,
  headers?: Record<string, string>,
): Promise<LoadClient> {
  const transport = headers ? { requestInit: { headers } } : {};
  if (kind === 'v2') {
    const client = new ClientV2(CLIENT_INFO, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    await settleOrClose(
      client.connect(new TransportV2(new URL(url), transport), { timeout: connectTimeoutMs }),
      client,
      connectTimeoutMs,
    );
    const options = progress
      ? { timeout: callTimeoutMs, onprogress: noProgress }
      : { timeout: callTimeoutMs };
    return {
      call: (params) => client.callTool(params, options) as Promise<CallOutcome>,
      listTools: async () =>
        (await client.listTools(undefined, { timeout: callTimeoutMs })).tools.map((t) => t.name),
      close: () => client.close(),
    };
  }
  const client = new ClientV1(CLIENT_INFO);
  await settleOrClose(
    client.connect(new TransportV1(new URL(url), transport), { timeout: connectTimeoutMs }),
    client,
    connectTimeoutMs,
  );
  const options = progress ? { timeout: callTimeoutMs, onprogress: noProgress } : { timeout: callTimeoutMs };
  return {
    call: (params) => client.callTool(params, undefined, options) as Promise<CallOutcome>,
    listTools: async () =>
      (await client.listTools(undefined, { timeout: callTimeoutMs })).tools.map((t) => t.name),
    close: () => client.close(),
  };
}

/**
 * Waits for a connect, bounded by `ms` even if the client ignores its own timeout; on failure
 * closes the client so no request of it outlives the attempt.
 */
async function settleOrClose(
  connecting: Promise<unknown>,
  client: { close(): Promise<void> },
  ms: number,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      connecting,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`connect timed out after ${ms} ms`)), ms);
      }),
    ]);
  } catch (err) {
    await client.close().catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Names the kind of a failed call with a short, bounded-cardinality key: `timeout` (the client's
 * own per-call timeout), `rpc:<code>` (a JSON-RPC error from the server), `http:<status>`,
 * `transport` (connection refused or reset, closed), `sdk:<code>` (other client-side failures),
 * `other:<ErrorName>`.
 */
export function errorKind(err: unknown): string {
  if (err instanceof SdkHttpError) return `http:${err.status}`;
  if (err instanceof SdkError) {
    if (err.code === SdkErrorCode.RequestTimeout) return 'timeout';
    if (err.code === SdkErrorCode.ConnectionClosed || err.code === SdkErrorCode.SendFailed)
      return 'transport';
    return `sdk:${err.code}`;
  }
  if (err instanceof ProtocolError) return `rpc:${err.code}`;
  if (err instanceof McpError) {
    // The v1 SDK reports its own timeout and a closed connection as McpErrors with these codes.
    const data = err.data as { timeout?: unknown } | undefined;
    if (err.code === ErrorCode.RequestTimeout && data && typeof data === 'object' && 'timeout' in data)
      return 'timeout';
    if (err.code === ErrorCode.ConnectionClosed && /connection closed/i.test(err.message)) return 'transport';
    return `rpc:${err.code}`;
  }
  if (err instanceof StreamableHTTPError) return err.code === undefined ? 'transport' : `http:${err.code}`;
  if (err instanceof Error) {
    if (err.name === 'AbortError') return 'cancelled';
    if (err.name === 'TimeoutError') return 'timeout';
    if (err instanceof TypeError && /fetch failed|terminated|socket/i.test(err.message)) return 'transport';
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return 'transport';
    return `other:${err.name || 'Error'}`;
  }
  return 'other:unknown';
}
