import {
  Client as ClientV2,
  type OAuthClientProvider,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

/** How a test client authenticates: an OAuth provider (v2 only) or fixed headers (an API key). */
export interface ClientCredentials {
  authProvider?: OAuthClientProvider;
  headers?: Record<string, string>;
}

/** The calls the tests make, the same for the v1 and the v2 client. */
export interface TestClient {
  readonly label: string;
  listTools(): Promise<{ name: string; inputSchema: unknown; outputSchema?: unknown }[]>;
  callTool(
    name: string,
    args: Record<string, unknown>,
    options?: {
      onProgress?: (p: { progress: number; total?: number; message?: string }) => void;
      signal?: AbortSignal;
      timeoutMs?: number;
      meta?: Record<string, unknown>;
    },
  ): Promise<{
    content: unknown[];
    structuredContent?: unknown;
    isError?: boolean;
    _meta?: Record<string, unknown>;
  }>;
  close(): Promise<void>;
}

/**
 * Connects an MCP client to `url`: `v2` speaks the 2026-07-28 revision with the v2 client
 * package, `v1` speaks the 2025 revisions with `@modelcontextprotocol/sdk` (it sends initialize
 * and gets a session id).
 */
export async function connectClient(
  kind: 'v1' | 'v2',
  url: string,
  credentials: ClientCredentials = {},
): Promise<TestClient> {
  const requestInit = credentials.headers ? { requestInit: { headers: credentials.headers } } : {};
  if (kind === 'v2') {
    const client = new ClientV2(
      { name: 'mcp-cluster-test', version: '1.0.0' },
      { versionNegotiation: { mode: { pin: '2026-07-28' } } },
    );
    await client.connect(
      new TransportV2(new URL(url), {
        ...requestInit,
        ...(credentials.authProvider ? { authProvider: credentials.authProvider } : {}),
      }),
    );
    return {
      label: 'v2 client (2026-07-28)',
      listTools: async () => (await client.listTools()).tools,
      callTool: async (name, args, options = {}) =>
        (await client.callTool(
          { name, arguments: args, ...(options.meta ? { _meta: options.meta } : {}) },
          {
            ...(options.onProgress ? { onprogress: options.onProgress } : {}),
            ...(options.signal ? { signal: options.signal } : {}),
            timeout: options.timeoutMs ?? 60_000,
          },
        )) as never,
      close: () => client.close(),
    };
  }
  if (credentials.authProvider) throw new Error('the v1 test client takes credentials as headers only');
  const client = new ClientV1({ name: 'mcp-cluster-test-v1', version: '1.0.0' });
  await client.connect(new TransportV1(new URL(url), requestInit));
  return {
    label: 'v1 client (2025)',
    listTools: async () => (await client.listTools()).tools,
    callTool: async (name, args, options = {}) =>
      (await client.callTool(
        { name, arguments: args, ...(options.meta ? { _meta: options.meta } : {}) },
        undefined,
        {
          ...(options.onProgress ? { onprogress: options.onProgress } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
          timeout: options.timeoutMs ?? 60_000,
        },
      )) as never,
    close: () => client.close(),
  };
}

/**
 * POSTs one JSON-RPC message to the MCP endpoint `url` as a 2025-06-18 client does over raw HTTP
 * (the answer is JSON or an SSE stream), in session `sessionId` unless that is empty; `signal`
 * aborts it.
 */
export function post2025(
  url: string,
  message: unknown,
  sessionId = '',
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    ...(signal ? { signal } : {}),
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
    },
    body: JSON.stringify(message),
  });
}

/**
 * Opens a 2025-06-18 session at `url` with a raw `initialize` (request id 0, no capabilities,
 * client `clientName` version 1) and resolves with the session id the server sent; '' when it
 * sent none.
 */
export async function open2025Session(url: string, clientName: string): Promise<string> {
  const res = await post2025(url, {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: {
      protocolVersion: '2025-06-18',
      capabilities: {},
      clientInfo: { name: clientName, version: '1' },
    },
  });
  await res.text();
  return res.headers.get('mcp-session-id') ?? '';
}

/** A JSON-RPC answer of {@link post2026}: the HTTP status and the response message. */
export interface RpcAnswer {
  status: number;
  body: {
    result?: Record<string, unknown>;
    error?: { code: number; message: string; data?: Record<string, unknown> };
  };
}

/**
 * One 2026-07-28 request to the MCP endpoint `url` over raw HTTP: the per-request `_meta`
 * envelope (protocol version, client info, `capabilities`, default none) and the standard
 * headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` from `params.name`), plus `headers`.
 * Resolves with the status and the response message (the last response event of an SSE answer).
 */
export async function post2026(
  url: string,
  method: string,
  params: Record<string, unknown>,
  options: { capabilities?: Record<string, unknown>; headers?: Record<string, string> } = {},
): Promise<RpcAnswer> {
  const name = typeof params.name === 'string' ? params.name : undefined;
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': method,
      ...(name ? { 'mcp-name': name } : {}),
      ...options.headers,
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method,
      params: {
        ...params,
        _meta: {
          'io.modelcontextprotocol/protocolVersion': '2026-07-28',
          'io.modelcontextprotocol/clientInfo': { name: 'mcp-cluster-test', version: '1' },
          'io.modelcontextprotocol/clientCapabilities': options.capabilities ?? {},
        },
      },
    }),
  });
  const text = await res.text();
  const body = res.headers.get('content-type')?.includes('text/event-stream')
    ? (text
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>)
        .find((m) => 'result' in m || 'error' in m) ?? {})
    : JSON.parse(text);
  return { status: res.status, body };
}

/** A stateless 2025-era `tools/call` of `name` with `args`, as {@link post2025} sends it (request id 1). */
export function callTool2025(url: string, name: string, args: Record<string, unknown>, signal?: AbortSignal) {
  return post2025(
    url,
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } },
    '',
    signal,
  );
}

/**
 * `count` agents calling `name` with `args` back to back (each calls again as soon as its answer
 * came), over {@link callTool2025}, until `signal` aborts; resolves once every agent stopped.
 * Failed calls are not retried faster: the agent simply calls again.
 */
export function runAgents(
  url: string,
  count: number,
  name: string,
  args: Record<string, unknown>,
  signal: AbortSignal,
): Promise<unknown> {
  const agent = async () => {
    while (!signal.aborted) {
      const res = await callTool2025(url, name, args, signal).catch(() => undefined);
      await res?.text().catch(() => undefined);
    }
  };
  return Promise.all(Array.from({ length: count }, agent));
}
