import { AsyncLocalStorage } from 'node:async_hooks';
import { type CallToolResult, ProtocolError, ProtocolErrorCode, Server } from '@modelcontextprotocol/server';
import {
  ClusterError,
  type ClusterErrorCode,
  clusterMetrics,
  encodeArguments,
  newCallId,
  type ToolCall,
  type ToolDefinition,
  toToolErrorResult,
} from '../core/index.js';
import type { CallRegistry } from './call-registry.js';
import type { ToolValidator } from './tool-validator.js';

/** What the HTTP layer knows about the request a handler serves. */
export interface RequestScope {
  /** Verified 2025-era session id, when the client sent one. */
  sessionId: string | undefined;
  /** Aborts when the client disconnects before the response ended. */
  signal: AbortSignal;
  /** Explicit affinity key from the `Mcp-Cluster-Session-Key` header. */
  sessionKeyHeader: string | undefined;
  tenant: string;
  traceparent: string | undefined;
}

/** The scope of the HTTP request being served, carried across the SDK's async calls. */
export const requestScope = new AsyncLocalStorage<RequestScope>();

/** `_meta` key a caller may set to shorten its call's deadline, in milliseconds from now. */
export const TIMEOUT_META_KEY = 'mcp-cluster/timeout-ms';
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
  registry: CallRegistry;
  /** Address workers send this replica's chunks to. */
  replyTo: () => string;
  maxDeadlineMs: number;
}

const SERVER_INFO = { name: 'mcp-cluster', version: '0.1.0' };

/**
 * Builds the MCP server instance for one request (the SDK's stateless serving creates one per
 * HTTP exchange). It only lists the catalog and hands calls to the registry; all state lives
 * in the registry and the broker, so any replica answers any request.
 */
export function createMcpServerFactory(deps: McpServerDeps): () => Server {
  const byName = new Map(deps.tools.map((t) => [t.name, t]));
  const listing = {
    tools: deps.tools.map((t) => ({
      name: t.name,
      description: t.description,
      inputSchema: t.inputSchema,
      ...(t.outputSchema ? { outputSchema: t.outputSchema } : {}),
    })),
  };
  const metrics = clusterMetrics();

  return () => {
    const server = new Server(SERVER_INFO, { capabilities: { tools: { listChanged: false } } });
    server.setRequestHandler('tools/list', () => listing as never);
    server.setRequestHandler('tools/call', async (request, ctx) => {
      const started = performance.now();
      const name = request.params.name;
      const tool = byName.get(name);
      if (!tool) {
        metrics.ingressCalls.inc({ tool: 'unknown', outcome: 'rejected' });
        throw new ProtocolError(
          ProtocolErrorCode.InvalidParams,
          `unknown tool "${name}"; tools/list names the tools this cluster serves (${[...byName.keys()].join(', ')})`,
        );
      }
      const finish = (result: CallToolResult, outcome: string): CallToolResult => {
        metrics.ingressCalls.inc({ tool: tool.name, outcome });
        metrics.callDuration.observe({ tool: tool.name, outcome }, (performance.now() - started) / 1000);
        return result;
      };

      const args = (request.params.arguments ?? {}) as Record<string, unknown>;
      const problem = deps.validator.check(tool.name, args);
      if (problem)
        return finish(
          toToolErrorResult(new ClusterError('INVALID_ARGUMENTS', problem)) as CallToolResult,
          'rejected',
        );

      const scope = requestScope.getStore();
      const meta = (ctx.mcpReq._meta ?? {}) as Record<string, unknown>;
      const deadline = deadlineOf(meta, tool.deadlineMs, deps.maxDeadlineMs);
      if (typeof deadline === 'string') {
        return finish(
          toToolErrorResult(new ClusterError('INVALID_ARGUMENTS', deadline)) as CallToolResult,
          'rejected',
        );
      }
      const progressToken = meta.progressToken as string | number | undefined;
      const now = Date.now();
      const call: ToolCall = {
        callId: newCallId(),
        tool: tool.name,
        pool: tool.pool,
        // Serialised once here; the worker parses them once.
        argumentsJson: encodeArguments(args),
        tenant: scope?.tenant ?? 'default',
        sessionKey: sessionKeyOf(meta, scope),
        priority: 'normal',
        deadlineUnixMs: now + deadline,
        attempt: 0,
        replyTo: deps.replyTo(),
        traceContext: scope?.traceparent ? { traceparent: scope.traceparent } : {},
        enqueuedUnixMs: now,
        wantsProgress: progressToken !== undefined,
      };
      const signal = scope ? AbortSignal.any([scope.signal, ctx.mcpReq.signal]) : ctx.mcpReq.signal;
      const outcome = await deps.registry.run(call, {
        signal,
        ...(scope?.sessionId
          ? { cancelKey: cancelKeyOf(scope.sessionId, JSON.stringify(ctx.mcpReq.id)) }
          : {}),
        ...(progressToken !== undefined
          ? {
              onProgress: (p) => {
                ctx.mcpReq
                  .notify({ method: 'notifications/progress', params: { progressToken, ...p } })
                  .catch(() => undefined);
              },
            }
          : {}),
      });
      if (outcome.kind === 'result') {
        return finish(
          JSON.parse(outcome.result.json) as CallToolResult,
          outcome.result.isError ? 'tool_error' : 'ok',
        );
      }
      return finish(toToolErrorResult(outcome.error) as CallToolResult, outcomeOf(outcome.error.code));
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

function sessionKeyOf(meta: Record<string, unknown>, scope: RequestScope | undefined): string {
  const fromMeta = meta[SESSION_KEY_META_KEY];
  if (typeof fromMeta === 'string' && fromMeta.length > 0) return fromMeta.slice(0, 256);
  return scope?.sessionKeyHeader ?? scope?.sessionId ?? '';
}
