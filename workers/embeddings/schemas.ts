import type { JsonSchema, ToolSettings } from '../../services/core/index.js';
import { embedSettings } from './settings.js';

/** `embed(texts, model?, normalize?)`, within the tool's `maxTexts` and `maxTextLength`. */
export function embedInput(tool: ToolSettings): JsonSchema {
  const { maxTexts, maxTextLength } = embedSettings.of(tool);
  return {
    type: 'object',
    properties: {
      texts: {
        type: 'array',
        items: { type: 'string', minLength: 1, maxLength: maxTextLength },
        minItems: 1,
        maxItems: maxTexts,
        description: `Texts to embed (1-${maxTexts}).`,
      },
      model: { type: 'string', minLength: 1, description: `Embedding model; default ${tool.model}.` },
      normalize: { type: 'boolean', default: true, description: 'Scale each vector to unit length.' },
    },
    required: ['texts'],
    additionalProperties: false,
  };
}

/** The `structuredContent` of an embed result: one vector per text, in order. */
export function embedOutput(): JsonSchema {
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
