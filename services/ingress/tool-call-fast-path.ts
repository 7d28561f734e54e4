import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  classifyInboundRequest,
  LOG_LEVEL_META_KEY,
  SUPPORTED_PROTOCOL_VERSIONS,
} from '@modelcontextprotocol/server';
import {
  ClusterError,
  type ClusterErrorCode,
  httpStatusOf,
  isMcpLogLevel,
  type Logger,
  retryAfterSeconds,
  toClusterError,
  toJsonRpcError,
  toToolErrorResult,
} from '../core/index.js';
import type { CallerIdentity } from './auth/index.js';
import type { ToolResultText } from './call-registry.js';
import { SSE_HEADERS } from './http-server.js';
import { type ClientAnswer, type ClientRequests, MAX_INPUT_ROUNDS } from './input-required.js';
import {
  CLIENT_CAPABILITIES_META_KEY,
  type RequestScope,
  type ToolCaller,
  type ToolCallRequest,
} from './mcp-server.js';
import { ownState } from './request-state.js';
import { stampInputRequired, stampModernResult } from './result-json.js';

/**
 * Serves the common `tools/call` without the SDK's per-request machinery (a `Server` and a
 * transport per request, zod parsing of the message and the result, a web `Request` and
 * `Response` around each exchange), which cost most of the ingress's CPU per call.
 *
 * It takes a request only when the SDK would serve it as a plain tools/call, decided by the SDK's
 * own `classifyInboundRequest` plus the checks that come after it; anything else (other methods,
 * batches, unknown tools, an unsupported revision, missing or mismatched `Mcp-*` headers, extra
 * params such as `task` or `requestState`, other reserved `_meta` keys, a 2025 request whose
 * Accept lacks either media type) goes to the SDK, which answers it as it always did. What it
 * writes is what the SDK writes for the same request:
 * - 2026-07-28: a JSON response, switched to an SSE stream by the first progress notification
 *   (the SDK's "auto" response mode); the result stamped with `resultType` and `serverInfo`.
 * - 2025 revisions (stateless): an SSE stream with progress notifications and then the response,
 *   or, once the caller withdrew the request (`notifications/cancelled`), nothing more.
 * - SSE streams get a keep-alive comment every 15 s, as the SDK's do.
 */
export interface ToolCallFastPath {
  /**
   * Serves `parsed` when it is a plain tools/call (and then resolves once the response ended);
   * returns `undefined` without touching `res` when the SDK must serve it.
   */
  tryServe(
    req: IncomingMessage,
    res: ServerResponse,
    parsed: unknown,
    scope: RequestScope,
    /** The caller, as the front door verified it. */
    identity: CallerIdentity,
  ): Promise<void> | undefined;
}

/** The revision whose tools/call this path serves; a newer one goes to the SDK until added here. */
const MODERN_REVISION = '2026-07-28';
/** Reserved `_meta` keys of the 2026-07-28 envelope this path knows; any other reserved key goes to the SDK. */
const RESERVED_META_PREFIX = 'io.modelcontextprotocol/';
const ENVELOPE_KEYS = new Set([
  'io.modelcontextprotocol/protocolVersion',
  'io.modelcontextprotocol/clientInfo',
  'io.modelcontextprotocol/clientCapabilities',
  // Checked below: a level the SDK would refuse goes to the SDK, which answers the error.
  LOG_LEVEL_META_KEY,
]);
const PARAM_KEYS = new Set(['name', 'arguments', '_meta']);
/** 2025-era revisions a stateless request may name in `MCP-Protocol-Version`. */
const LEGACY_REVISIONS = new Set(SUPPORTED_PROTOCOL_VERSIONS.filter((v) => v < MODERN_REVISION));
/** Interval of SSE keep-alive comments: the SDK's default (`DEFAULT_SSE_KEEP_ALIVE_MS`). */
const KEEP_ALIVE_MS = 15_000;

interface PlainCall {
  era: 'modern' | 'legacy';
  id: string | number;
  name: string;
  arguments: Record<string, unknown> | undefined;
  meta: Record<string, unknown>;
  progressToken: string | number | undefined;
  /** The client capabilities a 2026-07-28 request declared; undefined for a 2025-era one. */
  clientCapabilities: Record<string, unknown> | undefined;
}

export function createToolCallFastPath(options: {
  caller: ToolCaller;
  serverInfo: { name: string; version: string };
  log: Logger;
  /** Where a 2025-era session's answers to input requests arrive; absent: such calls get a tool error. */
  clientRequests?: ClientRequests;
}): ToolCallFastPath {
  const { caller, log, clientRequests } = options;
  const serverInfoJson = JSON.stringify(options.serverInfo);

  const plainCallOf = (req: IncomingMessage, parsed: unknown): PlainCall | undefined => {
    if (!isPlainObject(parsed) || parsed.method !== 'tools/call') return undefined;
    const params = parsed.params;
    if (!isPlainObject(params)) return undefined;
    for (const key in params) if (!PARAM_KEYS.has(key)) return undefined;
    const { name, arguments: args, _meta: meta = {} } = params;
    if (typeof name !== 'string' || !caller.knows(name)) return undefined;
    if (args !== undefined && !isPlainObject(args)) return undefined;
    if (!isPlainObject(meta)) return undefined;
    for (const key in meta)
      if (key.startsWith(RESERVED_META_PREFIX) && !ENVELOPE_KEYS.has(key)) return undefined;
    const logLevel = meta[LOG_LEVEL_META_KEY];
    if (logLevel !== undefined && !isMcpLogLevel(logLevel)) return undefined;
    const progressToken = meta.progressToken as string | number | undefined;
    if (
      progressToken !== undefined &&
      typeof progressToken !== 'string' &&
      !Number.isSafeInteger(progressToken)
    )
      return undefined;

    const versionHeader = headerOf(req, 'mcp-protocol-version');
    const methodHeader = headerOf(req, 'mcp-method');
    const nameHeader = headerOf(req, 'mcp-name');
    const route = classifyInboundRequest({
      httpMethod: 'POST',
      body: parsed,
      ...(versionHeader !== undefined ? { protocolVersionHeader: versionHeader } : {}),
      ...(methodHeader !== undefined ? { mcpMethodHeader: methodHeader } : {}),
      ...(nameHeader !== undefined ? { mcpNameHeader: nameHeader } : {}),
    });
    const accept = req.headers.accept ?? '';
    let era: PlainCall['era'];
    if (route.kind === 'modern') {
      // The checks the SDK's modern path makes after classifying: a served revision, and the
      // standard headers present and naming this call (`Mcp-Name` as plain text, not Base64).
      if (route.messageKind !== 'request' || route.classification.revision !== MODERN_REVISION)
        return undefined;
      if (versionHeader === undefined || methodHeader === undefined || nameHeader?.trim() !== name)
        return undefined;
      // The SDK streams progress whatever Accept says; a caller that cannot read a stream gets
      // whatever the SDK does for it.
      if ((progressToken !== undefined || logLevel !== undefined) && !accept.includes('text/event-stream'))
        return undefined;
      era = 'modern';
    } else if (route.kind === 'legacy' && route.reason === 'no-claim') {
      // The stateless 2025 transport's checks: both media types accepted, a known revision.
      if (!accept.includes('application/json') || !accept.includes('text/event-stream')) return undefined;
      if (versionHeader !== undefined && !LEGACY_REVISIONS.has(versionHeader)) return undefined;
      era = 'legacy';
    } else return undefined;
    const id = (parsed as { id: string | number }).id;
    const capabilities = era === 'modern' ? meta[CLIENT_CAPABILITIES_META_KEY] : undefined;
    const clientCapabilities = isPlainObject(capabilities) ? capabilities : undefined;
    return { era, id, name, arguments: args, meta, progressToken, clientCapabilities };
  };

  const serve = async (
    res: ServerResponse,
    call: PlainCall,
    scope: RequestScope,
    identity: CallerIdentity,
  ): Promise<void> => {
    const idJson = JSON.stringify(call.id);
    let keepAlive: NodeJS.Timeout | undefined;
    const gone = () => res.destroyed || res.writableEnded;
    const openStream = () => {
      res.writeHead(200, SSE_HEADERS);
      keepAlive = setInterval(() => {
        if (!gone()) res.write(': keepalive\n\n');
      }, KEEP_ALIVE_MS);
      keepAlive.unref();
    };
    const { progressToken } = call;
    /** Writes one notification on the response's SSE stream, opening it first if need be. */
    const notify = (method: string, params: unknown) => {
      if (gone()) return;
      if (!res.headersSent) openStream();
      res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method, params })}\n\n`);
    };
    try {
      let message: string;
      /** A refusal at admission: answered with its own HTTP status and Retry-After. */
      let refusal: { status: number; retryAfter: string | undefined } | undefined;
      try {
        const round = (input?: ToolCallRequest['input']) =>
          caller.call({
            name: call.name,
            arguments: call.arguments,
            meta: call.meta,
            requestIdJson: idJson,
            scope,
            identity,
            signal: scope.signal,
            onProgress:
              progressToken === undefined
                ? undefined
                : (p) => notify('notifications/progress', { progressToken, ...p }),
            onLog: (message) => notify('notifications/message', message),
            ...(input ? { input } : {}),
            ...(call.clientCapabilities ? { clientCapabilities: call.clientCapabilities } : {}),
          });
        let answer = await round();
        if (answer?.asks && call.era === 'legacy') {
          // A 2025-era client is asked on this stream, and the tool runs again with its answers.
          answer = await askClient(answer, call.name, scope, identity, round, (message) => {
            if (gone()) return;
            if (!res.headersSent) openStream();
            res.write(`event: message\ndata: ${message}\n\n`);
          });
        }
        if (!answer) {
          // Withdrawn by its caller: the stream ends without a response.
          scope.withdraw();
          return;
        }
        const json = oneLine(answer.json);
        const result =
          call.era === 'legacy'
            ? json
            : answer.asks
              ? stampInputRequired(json, serverInfoJson)
              : stampModernResult(json, serverInfoJson);
        message = `{"result":${result},"jsonrpc":"2.0","id":${idJson}}`;
      } catch (err) {
        const error = toClusterError(err);
        const status = httpStatusOf(error.code);
        if (status !== undefined) refusal = { status, retryAfter: retryAfterSeconds(error) };
        else if (error.code !== 'UNKNOWN_TOOL') log.error('tools/call failed', { err });
        message = JSON.stringify({ jsonrpc: '2.0', id: call.id, error: toJsonRpcError(error) });
      }
      if (gone()) return;
      if (refusal && !res.headersSent) {
        // Either era reads a JSON answer (a 2025 caller's Accept has application/json too).
        res.writeHead(refusal.status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(message),
          ...(refusal.retryAfter ? { 'retry-after': refusal.retryAfter } : {}),
        });
        res.end(message);
      } else if (res.headersSent) {
        res.end(`event: message\ndata: ${message}\n\n`);
      } else if (call.era === 'legacy') {
        res.writeHead(200, SSE_HEADERS);
        res.end(`event: message\ndata: ${message}\n\n`);
      } else {
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(message),
        });
        res.end(message);
      }
    } finally {
      clearInterval(keepAlive);
    }
  };

  /**
   * Asks a 2025-era session's client for what the tool needs (each input request written on the
   * call's stream with `write`), calls the tool again with the answers and the tool's state, and
   * so on for at most MAX_INPUT_ROUNDS rounds. A refused or unanswered request ends the call with a
   * tool error; undefined when the caller withdrew the request meanwhile.
   */
  const askClient = async (
    first: ToolResultText,
    tool: string,
    scope: RequestScope,
    identity: CallerIdentity,
    round: (input: ToolCallRequest['input']) => Promise<ToolResultText | undefined>,
    write: (message: string) => void,
  ): Promise<ToolResultText | undefined> => {
    const toolError = (code: ClusterErrorCode, message: string): ToolResultText => ({
      json: JSON.stringify(toToolErrorResult(new ClusterError(code, message))),
      isError: true,
    });
    const { sessionId } = scope;
    if (!sessionId || !clientRequests) {
      return toolError(
        'INVALID_ARGUMENTS',
        `tool ${tool} needs the caller's input (elicitation, sampling or roots); a 2025-era client must initialize a session to be asked`,
      );
    }
    let answer: ToolResultText | undefined = first;
    for (let rounds = 0; answer?.asks; rounds++) {
      if (rounds === MAX_INPUT_ROUNDS)
        return toolError('INTERNAL', `tool ${tool} asked for input more than ${MAX_INPUT_ROUNDS} times`);
      const asked = Object.entries(answer.asks.requests);
      let answers: ClientAnswer[];
      try {
        answers = await Promise.all(
          asked.map(([, request]) => clientRequests.ask(sessionId, request, write, scope.signal)),
        );
      } catch (err) {
        const error = toClusterError(err);
        return toolError(error.code, error.message);
      }
      const responses: Record<string, unknown> = {};
      for (const [i, [key, request]] of asked.entries()) {
        const reply = answers[i] as ClientAnswer;
        if ('error' in reply)
          return toolError(
            'INVALID_ARGUMENTS',
            `the client refused ${request.method} (${reply.error.code}: ${reply.error.message}); tool ${tool} needs it`,
          );
        responses[key] = reply.result;
      }
      answer = await round({ responses, state: ownState(tool, identity.principal, answer.asks.state) });
    }
    return answer;
  };

  return {
    tryServe(req, res, parsed, scope, identity) {
      const call = plainCallOf(req, parsed);
      return call ? serve(res, call, scope, identity) : undefined;
    },
  };
}

/** The JSON text on one line, as an SSE `data:` field needs (JSON.stringify output already is). */
function oneLine(json: string): string {
  return json.includes('\n') || json.includes('\r') ? JSON.stringify(JSON.parse(json)) : json;
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
