import type { JsonSchema, ToolSettings } from '../../services/core/index.js';
import { type InferenceToolSettings, inferenceSettings } from './settings.js';

// The argument schemas of the inference templates. Defaults shown to agents match what the
// adapters apply when an argument is absent (DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE,
// DEFAULT_SUMMARY_WORDS).

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

const text = (settings: InferenceToolSettings, description: string) => ({
  type: 'string',
  minLength: 1,
  maxLength: settings.maxTextLength,
  description,
});

/** `generate_text(prompt, max_tokens?, temperature?, system?)`. */
export function generateTextInput(tool: ToolSettings): JsonSchema {
  const settings = inferenceSettings.of(tool);
  return {
    type: 'object',
    properties: {
      prompt: text(settings, 'The prompt to complete.'),
      max_tokens: maxTokensSchema(settings.maxTokens),
      temperature: temperatureSchema,
      system: { type: 'string', maxLength: settings.maxTextLength, description: 'Optional system prompt.' },
    },
    required: ['prompt'],
    additionalProperties: false,
  };
}

/** `chat(messages, max_tokens?, temperature?)`. */
export function chatInput(tool: ToolSettings): JsonSchema {
  const settings = inferenceSettings.of(tool);
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
            content: { type: 'string', maxLength: settings.maxTextLength },
          },
          required: ['role', 'content'],
          additionalProperties: false,
        },
      },
      max_tokens: maxTokensSchema(settings.maxTokens),
      temperature: temperatureSchema,
    },
    required: ['messages'],
    additionalProperties: false,
  };
}

/** `summarize(text, max_words?)`. */
export function summarizeInput(tool: ToolSettings): JsonSchema {
  return {
    type: 'object',
    properties: {
      text: text(inferenceSettings.of(tool), 'The text to summarize.'),
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
}
