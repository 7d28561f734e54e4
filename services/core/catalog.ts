import type { ToolConfig, ToolTemplate } from './config.js';

/** A JSON Schema object (draft 2020-12 subset used by MCP tool schemas). */
export type JsonSchema = Record<string, unknown> & { type: 'object' };

/** A tool as agents see it in `tools/list`, plus what the cluster needs to route it. */
export interface ToolDefinition {
  name: string;
  description: string;
  pool: string;
  template: ToolTemplate;
  inputSchema: JsonSchema;
  outputSchema?: JsonSchema;
  /** Deadline of a call that gives none, in milliseconds. */
  deadlineMs: number;
  /** Scopes a caller needs to see and call the tool when the ingress authenticates (all of them). */
  scopes: readonly string[];
}

/**
 * The catalog of tools the configuration declares, in declaration order. Description and schemas
 * are the resolved ones: the configured, else the tool's template's (see its tool family).
 */
export function buildCatalog(tools: readonly ToolConfig[]): ToolDefinition[] {
  return tools.map((tool) => ({
    name: tool.name,
    description: tool.description,
    pool: tool.pool,
    template: tool.template,
    inputSchema: tool.inputSchema,
    ...(tool.outputSchema ? { outputSchema: tool.outputSchema } : {}),
    deadlineMs: tool.deadlineMs,
    scopes: tool.scopes,
  }));
}
