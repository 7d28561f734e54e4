import type { IncomingMessage, ServerResponse } from 'node:http';
import { createMcpHandler } from '@modelcontextprotocol/server';
import { createMcpFrontDoor, type FrontDoorOptions } from './http-server.js';
import type { ClientRequests } from './input-required.js';
import { SessionLogLevels } from './log-levels.js';
import { createMcpServerFactory, createToolCaller, type McpServerDeps, SERVER_INFO } from './mcp-server.js';
import { createToolCallFastPath } from './tool-call-fast-path.js';

/** Everything the `/mcp` endpoint needs: the front door's settings and the per-call dependencies. */
export type McpEndpointOptions = Omit<FrontDoorOptions, 'handler' | 'fastPath'> &
  McpServerDeps & {
    /** Where 2025-era sessions' answers to the ingress's input requests arrive; absent: such sessions are not asked. */
    clientRequests?: ClientRequests;
  };

/** The `/mcp` endpoint of one replica. */
export interface McpEndpoint {
  serve(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Closes the SDK handler's in-flight exchanges (calls on the fast path end with the registry). */
  close(): Promise<void>;
}

/**
 * Wires `/mcp`: the front door (Host/Origin, body, sessions, cancels), the fast path for plain
 * `tools/call` requests, and the SDK's handler (2026-07-28 and stateless 2025 serving) for the
 * rest. Both paths run calls through one {@link createToolCaller}.
 */
export function createMcpEndpoint(options: McpEndpointOptions): McpEndpoint {
  const {
    tools,
    validator,
    registry,
    replyTo,
    maxDeadlineMs,
    allows,
    tenantLabel,
    audit,
    tasks,
    admission,
    catalog,
    requestStates,
    resultLinks,
    clientRequests,
    ...door
  } = options;
  const deps: McpServerDeps = {
    tools,
    validator,
    registry,
    replyTo,
    maxDeadlineMs,
    requestStates,
    ...(resultLinks ? { resultLinks } : {}),
    ...(allows ? { allows } : {}),
    ...(tenantLabel ? { tenantLabel } : {}),
    ...(audit ? { audit } : {}),
    ...(tasks ? { tasks } : {}),
    ...(admission ? { admission } : {}),
    ...(catalog ? { catalog } : {}),
    logLevels: new SessionLogLevels(),
  };
  const caller = createToolCaller(deps);
  const handler = createMcpHandler(createMcpServerFactory(deps, caller), {
    legacy: 'stateless',
    maxRequestBodySize: door.maxBodyBytes,
    onerror: (err) => door.log.debug('mcp handler error', { err }),
  });
  const serve = createMcpFrontDoor({
    ...door,
    handler,
    fastPath: createToolCallFastPath({
      caller,
      serverInfo: SERVER_INFO,
      log: door.log,
      ...(clientRequests ? { clientRequests } : {}),
    }),
  });
  return { serve, close: () => handler.close() };
}
