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
  chat: 'Continue a conversation with a large language model: give the messages so far, get the assistant reply. Tokens stream as progress notifications when a progress token is given.',
  summarize: 'Summarize a text in at most max_words words with a large language model.',
  embed:
    'Embed texts as vectors with an embedding model. Returns one vector per text, in order, in structuredContent.vectors.',
  generate_image:
    'Generate a PNG image from a text prompt with a diffusion model. Sampler steps arrive as progress notifications when a progress token is given.',
};

const maxTokensSchema = (limit: number) => ({
  type: 'integer',
  minimum: 1,
  maximum: limit,
  default: Math.min(256, limit),
  description: `Most tokens to generate (1-${limit}).`,
});

const temperatureSchema = {
  type: 'number',
  minimum: 0,
  maximum: 2,
  default: 0.7,
  description: 'Sampling temperature (0-2).',
};

const imageSideSchema = (limit: number, what: string) => ({
  type: 'integer',
  minimum: 64,
  maximum: limit,
  multipleOf: 8,
  default: Math.min(512, limit),
  description: `Image ${what} in pixels, a multiple of 8 (64-${limit}).`,
});

/**
 * The input schema of a tool: the one the configuration gives, else its template's with the
 * limits of `tool`.
 */
export function inputSchemaFor(tool: ToolConfig): JsonSchema {
  if (tool.inputSchema) return tool.inputSchema as JsonSchema;
  const text = (description: string) => ({
    type: 'string',
    minLength: 1,
    maxLength: tool.maxTextLength,
    description,
  });
  switch (tool.template) {
    case 'generate_text':
      return {
        type: 'object',
        properties: {
          prompt: text('The prompt to complete.'),
          max_tokens: maxTokensSchema(tool.maxTokens),
          temperature: temperatureSchema,
          system: { type: 'string', maxLength: tool.maxTextLength, description: 'Optional system prompt.' },
        },
        required: ['prompt'],
        additionalProperties: false,
      };
    case 'chat':
      return {
        type: 'object',
        properties: {
          messages: {
            type: 'array',
            minItems: 1,
            maxItems: 1000,
            description: 'The conversation so far, oldest first.',
            items: {
              type: 'object',
              properties: {
                role: { type: 'string', enum: ['system', 'user', 'assistant'] },
                content: { type: 'string', maxLength: tool.maxTextLength },
              },
              required: ['role', 'content'],
              additionalProperties: false,
            },
          },
          max_tokens: maxTokensSchema(tool.maxTokens),
          temperature: temperatureSchema,
        },
        required: ['messages'],
        additionalProperties: false,
      };
    case 'summarize':
      return {
        type: 'object',
        properties: {
          text: text('The text to summarize.'),
          max_words: {
            type: 'integer',
            minimum: 1,
            maximum: 2000,
            default: 100,
            description: 'Longest summary in words (1-2000).',
          },
        },
        required: ['text'],
        additionalProperties: false,
      };
    case 'embed':
      return {
        type: 'object',
        properties: {
          texts: {
            type: 'array',
            items: { type: 'string', minLength: 1, maxLength: tool.maxTextLength },
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
    case 'generate_image':
      return {
        type: 'object',
        properties: {
          prompt: { type: 'string', minLength: 1, maxLength: 4000, description: 'What the image shows.' },
          negative_prompt: { type: 'string', maxLength: 4000, description: 'What the image must not show.' },
          width: imageSideSchema(tool.maxImageSize, 'width'),
          height: imageSideSchema(tool.maxImageSize, 'height'),
          steps: {
            type: 'integer',
            minimum: 1,
            maximum: tool.maxSteps,
            default: Math.min(20, tool.maxSteps),
            description: `Sampler steps (1-${tool.maxSteps}).`,
          },
          seed: {
            type: 'integer',
            minimum: 0,
            maximum: 4_294_967_295,
            description: 'Random seed; the same seed and prompt give the same image.',
          },
        },
        required: ['prompt'],
        additionalProperties: false,
      };
  }
}

/** The output schema of a tool whose result is structured: the configured one, else its template's. */
export function outputSchemaFor(tool: ToolConfig): JsonSchema | undefined {
  if (tool.outputSchema) return tool.outputSchema as JsonSchema;
  if (tool.template !== 'embed') return undefined;
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
    const outputSchema = outputSchemaFor(tool);
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
