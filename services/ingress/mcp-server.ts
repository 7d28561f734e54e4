import { AsyncLocalStorage } from 'node:async_hooks';
import { type CallToolResult, LOG_LEVEL_META_KEY, ProtocolError, Server } from '@modelcontextprotocol/server';
import { SpanKind, trace } from '@opentelemetry/api';
import { z } from 'zod';
import {
  ATTR,
  type CallLogMessage,
  ClusterError,
  type ClusterErrorCode,
  callAttributes,
  callerTraceCarrier,
  callTracer,
  callTracingOn,
  clusterMetrics,
  contextOf,
  encodeArguments,
  httpStatusOf,
  isMcpLogLevel,
  isProtocolError,
  type Logger,
  MCP_LOG_LEVELS,
  type McpLogLevel,
  markFailed,
  newCallId,
  type ToolCall,
  type ToolDefinition,
  toClusterError,
  toJsonRpcError,
  toToolErrorResult,
} from '../core/index.js';
import type { IngressAdmission } from './admission/index.js';
import { type CallerIdentity, identityOf } from './auth/index.js';
import type { CallProgress, CallRegistry, ToolResultText } from './call-registry.js';
import type { CatalogServing } from './content-catalog.js';
import { checkedInputRequired } from './input-required.js';
import type { SessionLogLevels } from './log-levels.js';
import { type ContinuedState, continuedStateFor, type RequestStates } from './request-state.js';
import type { ResultLinks } from './result-links.js';
import type { McpTasks } from './tasks.js';
import type { ToolValidator } from './tool-validator.js';

/** What the HTTP layer knows about the request a handler serves. */
export interface RequestScope {
  /** Verified 2025-era session id, when the client sent one. */
  sessionId: string | undefined;
  /** Aborts when the client disconnects before the response ended. */
  signal: AbortSignal;
  /** Explicit affinity key from the `Mcp-Cluster-Session-Key` header. */
  sessionKeyHeader: string | undefined;
  /** The W3C `traceparent` header (`params._meta.traceparent` wins over it). */
  traceparent: string | undefined;
  /** The W3C `tracestate` header, read with `traceparent`. */
  tracestate?: string | undefined;
  /**
   * Ends the HTTP response without answering the request: its caller withdrew it with
   * `notifications/cancelled`. An SSE stream already open ends after the notifications it carried;
   * otherwise the answer is an empty SSE stream. Nothing written afterwards reaches the caller.
   */
  withdraw(): void;
  /**
   * Set when the request's call was refused with an HTTP status of its own (RATE_LIMITED and
   * OVERLOADED at admission, MISSING_CLIENT_CAPABILITY): the front door then answers the SDK's
   * JSON-RPC error with that status and any `Retry-After`.
   */
  refused?: ClusterError;
}

/** The scope of the HTTP request being served, carried across the SDK's async calls. */
export const requestScope = new AsyncLocalStorage<RequestScope>();

/** `_meta` key a caller may set to shorten its call's deadline, in milliseconds from now. */
export const TIMEOUT_META_KEY = 'mcp-cluster/timeout-ms';
/** `_meta` key of the client capabilities a 2026-07-28 request declares. */
export const CLIENT_CAPABILITIES_META_KEY = 'io.modelcontextprotocol/clientCapabilities';
/** `_meta` key a caller may set to choose its backend-affinity key (e.g. a conversation id). */
export const SESSION_KEY_META_KEY = 'mcp-cluster/session-key';

/**
 * Joins a session id and a JSON-RPC request id into the key cancels are matched on. The id is
 * taken in its JSON form so that the request id `1` and the request id `"1"` stay distinct.
 */
export function cancelKeyOf(sessionId: string, requestIdJson: string): string {
  return `${sessionId}\u0000${requestIdJson}`;
}

/** Everything the per-request MCP server needs from the replica. */
export interface McpServerDeps {
  tools: ToolDefinition[];
  validator: ToolValidator;
  registry: Pick<CallRegistry, 'run'>;
  /** Address workers send this replica's chunks to. */
  replyTo: () => string;
  maxDeadlineMs: number;
  /** Whether a caller holding `scopes` may see and call `tool` (default: everyone may). */
  allows?: (tool: ToolDefinition, scopes: readonly string[]) => boolean;
  /** Tenant as a metric label: those named in `auth.tenants`, the rest as `other` (default: as is). */
  tenantLabel?: (tenant: string) => string;
  /** Writes the audit line of each answered call; absent: no audit of calls. */
  audit?: Logger;
  /** `embed_batch` and the task methods (see tasks.ts); absent: the replica serves no batch jobs. */
  tasks?: McpTasks;
  /** Per-tenant limits, fair queueing and load shedding (see admission/); absent: every call is admitted. */
  admission?: Pick<IngressAdmission, 'admit'>;
  /** Resources, prompts and completions from the config (see content-catalog.ts); absent: none. */
  catalog?: CatalogServing;
  /**
   * The levels 2025-era sessions set with `logging/setLevel`; absent: such a session's level is
   * not remembered (a 2026-07-28 request names its level in `_meta` and needs no store).
   */
  logLevels?: SessionLogLevels;
  /** Signs and checks the `requestState` of multi-round-trip input; every replica must share its secret. */
  requestStates: RequestStates;
  /** Large result media as resource links (`ingress.resultLinks`); absent: every item inline. */
  resultLinks?: ResultLinks;
}

/** `logging/setLevel` params: one of the MCP levels. */
const SET_LEVEL_SCHEMAS = { params: z.object({ level: z.enum(MCP_LOG_LEVELS) }) };

/** The server identity answered on `initialize` and stamped on 2026-07-28 results. */
export const SERVER_INFO = { name: 'mcp-cluster', version: '0.1.0' };

/** One `tools/call` as either serving path hands it over. */
export interface ToolCallRequest {
  name: string;
  arguments: Record<string, unknown> | undefined;
  /** The request's `params._meta` (empty when absent). */
  meta: Record<string, unknown>;
  /** The JSON-RPC request id in its JSON form (the 2025-era cancel key uses it). */
  requestIdJson: string;
  scope: RequestScope | undefined;
  /** Who calls, as the front door verified it. */
  identity: CallerIdentity;
  /** Aborts when the caller is gone; the call is then cancelled. */
  signal: AbortSignal;
  /** Called with each progress report when `meta.progressToken` is set. */
  onProgress: ((progress: CallProgress) => void) | undefined;
  /**
   * Called with each log message of the running call, when the caller asked for logs (the
   * request's `_meta` level, else its session's `logging/setLevel`); absent: no logs are sent.
   */
  onLog?: ((message: CallLogMessage) => void) | undefined;
  /**
   * Multi-round-trip input: the caller's answers (`inputResponses`) and the verified
   * `requestState` of the round before; absent on a first round.
   */
  input?: { responses: Record<string, unknown>; state?: ContinuedState | undefined } | undefined;
  /** The client capabilities the request declared (2026-07-28 `_meta`); absent when unknown. */
  clientCapabilities?: Record<string, unknown> | undefined;
}

/** Runs `tools/call` for both serving paths: the SDK's per-request server and the fast path. */
export interface ToolCaller {
  /** Whether the catalog has a tool of that name. */
  knows(name: string): boolean;
  /**
   * Validates, enqueues and waits for one call. Resolves with the `CallToolResult` as JSON text
   * (a worker's result, or an `isError` result for invalid arguments, a deadline or a disconnect),
   * or with `undefined` when the caller withdrew the request (a 2025-era `notifications/cancelled`):
   * then the request must get no answer and no more progress. Rejects with a ClusterError
   * UNKNOWN_TOOL for a tool not in the catalog.
   */
  call(request: ToolCallRequest): Promise<ToolResultText | undefined>;
}

/** The `tools/call` logic shared by both serving paths: validation, deadline, enqueue, metrics. */
export function createToolCaller(deps: McpServerDeps): ToolCaller {
  const byName = new Map(deps.tools.map((t) => [t.name, t]));
  const allows = deps.allows ?? (() => true);
  const tenantLabel = deps.tenantLabel ?? ((tenant: string) => tenant);
  const metrics = clusterMetrics();
  const tracer = callTracer();
  const states = deps.requestStates;
  return {
    knows: (name) => byName.has(name),
    async call(request) {
      const started = performance.now();
      const { identity, meta, scope } = request;
      const tool = byName.get(request.name);
      // The caller's W3C context (`_meta`, else the headers), passed on in the envelope even when
      // this replica does not trace; and the call's SERVER span continuing it when it does.
      const callerTrace =
        meta.traceparent !== undefined || scope?.traceparent !== undefined
          ? callerTraceCarrier(meta, { traceparent: scope?.traceparent, tracestate: scope?.tracestate })
          : {};
      const span = callTracingOn()
        ? tracer.startSpan(
            'tools/call',
            { kind: SpanKind.SERVER, attributes: { [ATTR.mcpMethod]: 'tools/call' } },
            contextOf(callerTrace),
          )
        : undefined;
      // A tool the caller's scopes hide is as unknown to them as one the catalog lacks.
      if (!tool || !allows(tool, identity.scopes)) {
        if (span) {
          markFailed(span, 'UNKNOWN_TOOL');
          span.setAttribute(ATTR.outcome, 'rejected');
          span.end();
        }
        metrics.ingressCalls.inc({
          tool: 'unknown',
          outcome: 'rejected',
          tenant: tenantLabel(identity.tenant),
        });
        const names = deps.tools.filter((t) => allows(t, identity.scopes)).map((t) => t.name);
        throw new ClusterError(
          'UNKNOWN_TOOL',
          `unknown tool "${request.name}"; tools/list names the tools this cluster serves you (${names.join(', ')})`,
        );
      }
      span?.updateName(`tools/call ${tool.name}`);
      let callId = '';
      const finish = (result: ToolResultText, outcome: string, code?: string): ToolResultText => {
        if (span) {
          span.setAttribute(ATTR.outcome, outcome);
          if (code) markFailed(span, code);
          span.end();
        }
        metrics.ingressCalls.inc({ tool: tool.name, outcome, tenant: tenantLabel(identity.tenant) });
        metrics.callDuration.observe({ tool: tool.name, outcome }, (performance.now() - started) / 1000);
        deps.audit?.info('call', {
          tenant: identity.tenant,
          principal: identity.principal,
          tool: tool.name,
          outcome,
          ...(callId ? { callId } : {}),
        });
        return result;
      };
      const failed = (error: ClusterError): ToolResultText => ({
        json: JSON.stringify(toToolErrorResult(error)),
        isError: true,
      });

      // Validation completes the arguments with schema defaults in place: the request owns them.
      const args = request.arguments ?? {};
      const problem = deps.validator.check(tool.name, args);
      if (problem)
        return finish(
          failed(new ClusterError('INVALID_ARGUMENTS', problem)),
          'rejected',
          'INVALID_ARGUMENTS',
        );

      const deadline = deadlineOf(meta, tool.deadlineMs, deps.maxDeadlineMs);
      if (typeof deadline === 'string')
        return finish(
          failed(new ClusterError('INVALID_ARGUMENTS', deadline)),
          'rejected',
          'INVALID_ARGUMENTS',
        );
      // A continued call's state names its tool and caller: checked before anything is queued.
      let continued: string | undefined;
      try {
        if (request.input?.state)
          continued = continuedStateFor(request.input.state, tool.name, identity.principal);
      } catch (err) {
        const error = toClusterError(err);
        finish(failed(error), 'rejected', error.code);
        throw error;
      }
      const responses = request.input?.responses;
      const wantsProgress = meta.progressToken !== undefined && request.onProgress !== undefined;
      // Absent unless the caller asked: the worker then sends no log chunks at all.
      const logLevel = request.onLog ? logLevelOf(meta, scope, deps.logLevels) : undefined;
      const now = Date.now();
      callId = newCallId();
      const call: ToolCall = {
        callId,
        tool: tool.name,
        pool: tool.pool,
        // Serialised once here; the worker parses them once.
        argumentsJson: encodeArguments(args),
        tenant: identity.tenant,
        sessionKey: sessionKeyOf(meta, scope),
        priority: 'normal',
        deadlineUnixMs: now + deadline,
        attempt: 0,
        replyTo: deps.replyTo(),
        // The caller's context; the registry replaces it with its PRODUCER span's when tracing is on.
        traceContext: { ...callerTrace },
        enqueuedUnixMs: now,
        wantsProgress,
        // The verified identity, never the credential: tokens and keys stay here.
        principal: identity.principal,
        scopes: [...identity.scopes],
        ...(logLevel ? { logLevel } : {}),
        ...(responses && Object.keys(responses).length > 0
          ? { inputResponsesJson: JSON.stringify(responses) }
          : {}),
        ...(continued !== undefined ? { requestState: continued } : {}),
        ...(request.clientCapabilities
          ? { clientCapabilitiesJson: JSON.stringify(request.clientCapabilities) }
          : {}),
      };
      // Before anything is queued: over a limit, or in a pool too backlogged for the deadline, the
      // request itself is refused (HTTP 429 / 503 with Retry-After, a JSON-RPC error).
      if (span?.isRecording()) span.setAttributes({ ...callAttributes(call), [ATTR.callId]: callId });
      const ticket = deps.admission?.admit(tool, args, identity.tenant, call.deadlineUnixMs);
      if (ticket instanceof ClusterError) {
        finish(failed(ticket), 'rejected', ticket.code);
        throw ticket;
      }
      const outcome = await deps.registry.run(call, {
        signal: request.signal,
        ...(span?.isRecording() ? { trace: trace.setSpan(contextOf(callerTrace), span) } : {}),
        ...(ticket ? { ticket } : {}),
        ...(scope?.sessionId ? { cancelKey: cancelKeyOf(scope.sessionId, request.requestIdJson) } : {}),
        ...(wantsProgress ? { onProgress: request.onProgress } : {}),
        ...(logLevel ? { onLog: request.onLog } : {}),
      });
      if (outcome.kind === 'result' && outcome.result.inputRequired) {
        let asked: ToolResultText;
        try {
          asked = await checkedInputRequired(
            outcome.result,
            tool.name,
            identity.principal,
            request.clientCapabilities,
            states,
          );
        } catch (err) {
          const error = toClusterError(err);
          if (!isProtocolError(error.code)) return finish(failed(error), 'tool_error', error.code);
          finish(failed(error), 'rejected', error.code);
          throw error;
        }
        return finish(asked, 'input_required');
      }
      if (outcome.kind === 'result' && deps.resultLinks) {
        const json = await deps.resultLinks.linkLarge(outcome.result.json, identity.tenant, tool.name);
        return finish({ ...outcome.result, json }, outcome.result.isError ? 'tool_error' : 'ok');
      }
      if (outcome.kind === 'result')
        return finish(outcome.result, outcome.result.isError ? 'tool_error' : 'ok');
      if (outcome.kind === 'withdrawn') {
        finish(
          failed(new ClusterError('CANCELLED', 'the caller cancelled the request')),
          'cancelled',
          'CANCELLED',
        );
        return undefined;
      }
      return finish(failed(outcome.error), outcomeOf(outcome.error.code), outcome.error.code);
    },
  };
}

/**
 * Builds the MCP server instance for one request (the SDK's stateless serving creates one per
 * HTTP exchange). It lists the catalog and hands calls to `caller`; all state lives in the
 * registry and the broker, so any replica answers any request.
 */
export function createMcpServerFactory(
  deps: McpServerDeps,
  caller: ToolCaller = createToolCaller(deps),
): () => Server {
  const entryOf = (t: ToolDefinition) => ({
    name: t.name,
    description: t.description,
    inputSchema: t.inputSchema,
    ...(t.outputSchema ? { outputSchema: t.outputSchema } : {}),
  });
  const listing = { tools: deps.tools.map(entryOf) };
  const { allows, tasks } = deps;

  return () => {
    const options = {
      capabilities: { tools: { listChanged: false }, logging: {}, ...deps.catalog?.capabilities },
      // A forged, altered or expired `requestState` is answered -32602 before any handler runs.
      requestState: { verify: (state: string) => deps.requestStates.verify(state) },
    };
    const server = tasks ? tasks.createServer(SERVER_INFO, options) : new Server(SERVER_INFO, options);
    deps.catalog?.register(server);
    server.setRequestHandler('tools/list', (_request, ctx) => {
      if (!allows && !tasks) return listing as never;
      // Callers see only the tools their scopes let them call.
      const { scopes } = identityOf(ctx.http?.authInfo);
      const catalog = allows ? deps.tools.filter((t) => allows(t, scopes)).map(entryOf) : listing.tools;
      return { tools: tasks ? [...catalog, ...tasks.list(scopes)] : catalog } as never;
    });
    // Replaces the SDK's handler, whose levels live in this per-request server and die with it.
    // Its own params schema makes an unknown level a JSON-RPC invalid-params error (the SDK's
    // built-in validation answers an internal error).
    server.setRequestHandler('logging/setLevel', SET_LEVEL_SCHEMAS, (params) => {
      const sessionId = requestScope.getStore()?.sessionId;
      if (sessionId) deps.logLevels?.set(sessionId, params.level);
      return {} as never;
    });
    server.setRequestHandler('tools/call', async (request, ctx) => {
      if (tasks?.handles(request.params.name)) return (await tasks.call(request, ctx)) as never;
      const scope = requestScope.getStore();
      // The SDK lifts the 2026-07-28 envelope's keys out of `_meta`; the log level goes back in.
      const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
      const envelopeLevel = envelope?.[LOG_LEVEL_META_KEY];
      const capabilities = envelope?.[CLIENT_CAPABILITIES_META_KEY];
      const meta = {
        ...ctx.mcpReq._meta,
        ...(envelopeLevel !== undefined ? { [LOG_LEVEL_META_KEY]: envelopeLevel } : {}),
      } as Record<string, unknown>;
      const progressToken = meta.progressToken as string | number | undefined;
      try {
        const answer = await caller.call({
          name: request.params.name,
          arguments: request.params.arguments as Record<string, unknown> | undefined,
          meta,
          requestIdJson: JSON.stringify(ctx.mcpReq.id),
          scope,
          identity: identityOf(ctx.http?.authInfo),
          signal: scope ? AbortSignal.any([scope.signal, ctx.mcpReq.signal]) : ctx.mcpReq.signal,
          onProgress: (p) => {
            ctx.mcpReq
              .notify({
                method: 'notifications/progress',
                params: { progressToken: progressToken as never, ...p },
              })
              .catch(() => undefined);
          },
          onLog: (message) => {
            ctx.mcpReq
              .notify({ method: 'notifications/message', params: message as never })
              .catch(() => undefined);
          },
          // Verified by the `requestState` hook above; the caller checks it names this tool and caller.
          input: {
            responses: ctx.mcpReq.inputResponses ?? {},
            state: ctx.mcpReq.requestState<ContinuedState>(),
          },
          clientCapabilities:
            typeof capabilities === 'object' && capabilities !== null
              ? (capabilities as Record<string, unknown>)
              : undefined,
        });
        if (!answer) {
          // The front door ends the response here; what the SDK then writes goes nowhere.
          scope?.withdraw();
          return toToolErrorResult(
            new ClusterError('CANCELLED', 'the caller cancelled the request'),
          ) as never;
        }
        if (answer.asks && envelope === undefined) {
          // A 2025-era request here (not the plain tools/call the fast path serves) has no stream
          // this replica can ask its client on.
          return toToolErrorResult(
            new ClusterError(
              'INVALID_ARGUMENTS',
              `tool ${request.params.name} needs the caller's input (${Object.values(answer.asks.requests)
                .map((r) => r.method)
                .join(
                  ', ',
                )}); call it as a plain tools/call in an initialized session, or on protocol revision 2026-07-28`,
            ),
          ) as never;
        }
        return JSON.parse(answer.json) as CallToolResult;
      } catch (err) {
        const error = toClusterError(err);
        if (!isProtocolError(error.code)) throw err;
        // Refusals with an HTTP status of their own (429, 503, 400 for a missing capability).
        if (scope && httpStatusOf(error.code) !== undefined) scope.refused = error;
        const rpc = toJsonRpcError(error);
        throw new ProtocolError(rpc.code, rpc.message, rpc.data);
      }
    });
    return server;
  };
}

/**
 * The `outcome` label of a call that ended in an error: `timeout` and `cancelled` by their codes,
 * `rejected` for arguments a worker found invalid (the schema let them through), `tool_error` for
 * everything else (the backend failed or refused, the queue was unavailable, the replica shut down).
 */
function outcomeOf(code: ClusterErrorCode): 'timeout' | 'cancelled' | 'rejected' | 'tool_error' {
  switch (code) {
    case 'DEADLINE_EXCEEDED':
      return 'timeout';
    case 'CANCELLED':
      return 'cancelled';
    case 'INVALID_ARGUMENTS':
      return 'rejected';
    default:
      return 'tool_error';
  }
}

function deadlineOf(meta: Record<string, unknown>, toolDefaultMs: number, maxMs: number): number | string {
  const asked = meta[TIMEOUT_META_KEY];
  if (asked === undefined) return Math.min(toolDefaultMs, maxMs);
  if (typeof asked !== 'number' || !Number.isFinite(asked) || asked <= 0) {
    return `_meta["${TIMEOUT_META_KEY}"] must be a positive number of milliseconds, got ${JSON.stringify(asked)}`;
  }
  if (asked > maxMs)
    return `_meta["${TIMEOUT_META_KEY}"] is ${asked} ms, above this cluster's limit of ${maxMs} ms`;
  return asked;
}

/**
 * The lowest log level the caller of one request asked for: the 2026-07-28 `_meta` level, else
 * the level its 2025-era session set with `logging/setLevel`; undefined when it asked for none.
 */
export function logLevelOf(
  meta: Record<string, unknown>,
  scope: RequestScope | undefined,
  levels: SessionLogLevels | undefined,
): McpLogLevel | undefined {
  const asked = meta[LOG_LEVEL_META_KEY];
  if (isMcpLogLevel(asked)) return asked;
  return scope?.sessionId ? levels?.get(scope.sessionId) : undefined;
}

function sessionKeyOf(meta: Record<string, unknown>, scope: RequestScope | undefined): string {
  const fromMeta = meta[SESSION_KEY_META_KEY];
  if (typeof fromMeta === 'string' && fromMeta.length > 0) return fromMeta.slice(0, 256);
  return scope?.sessionKeyHeader ?? scope?.sessionId ?? '';
}
