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
}

const DESCRIPTIONS: Record<ToolTemplate, string> = {
  generate_text:
    'Generate text from a prompt with a large language model. Tokens stream as progress notifications when a progress token is given.',
  embed:
    'Embed texts as vectors with an embedding model. Returns one vector per text, in order, in structuredContent.vectors.',
};

/** The input schema a tool of `template` accepts, with the limits of `tool`. */
export function inputSchemaFor(tool: ToolConfig): JsonSchema {
  switch (tool.template) {
    case 'generate_text':
      return {
        type: 'object',
        properties: {
          prompt: {
            type: 'string',
            minLength: 1,
            maxLength: 200_000,
            description: 'The prompt to complete.',
          },
          max_tokens: {
            type: 'integer',
            minimum: 1,
            maximum: tool.maxTokens,
            default: 256,
            description: `Most tokens to generate (1-${tool.maxTokens}).`,
          },
          temperature: {
            type: 'number',
            minimum: 0,
            maximum: 2,
            default: 0.7,
            description: 'Sampling temperature (0-2).',
          },
          system: { type: 'string', maxLength: 50_000, description: 'Optional system prompt.' },
        },
        required: ['prompt'],
        additionalProperties: false,
      };
    case 'embed':
      return {
        type: 'object',
        properties: {
          texts: {
            type: 'array',
            items: { type: 'string', minLength: 1, maxLength: 100_000 },
            minItems: 1,
            maxItems: tool.maxTexts,
            description: `Texts to embed (1-${tool.maxTexts}).`,
          },
          model: { type: 'string', minLength: 1, description: `Embedding model; default ${tool.model}.` },
          normalize: { type: 'boolean', default: true, description: 'Scale each vector to unit length.' },
        },
        required: ['texts'],
        additionalProperties: false,
      };
  }
}

/** The output schema of a tool of `template`, when its result is structured. */
export function outputSchemaFor(template: ToolTemplate): JsonSchema | undefined {
  if (template !== 'embed') return undefined;
  return {
    type: 'object',
    properties: {
      model: { type: 'string' },
      dimensions: { type: 'integer', minimum: 0 },
      vectors: { type: 'array', items: { type: 'array', items: { type: 'number' } } },
    },
    required: ['model', 'dimensions', 'vectors'],
  };
}

/** The catalog of tools the configuration declares, in declaration order. */
export function buildCatalog(tools: ToolConfig[]): ToolDefinition[] {
  return tools.map((tool) => {
    const outputSchema = outputSchemaFor(tool.template);
    return {
      name: tool.name,
      description: tool.description ?? DESCRIPTIONS[tool.template],
      pool: tool.pool,
      template: tool.template,
      inputSchema: inputSchemaFor(tool),
      ...(outputSchema ? { outputSchema } : {}),
      deadlineMs: tool.deadlineMs,
    };
  });
}
