import type { JsonSchema } from '../core/index.js';
import { count, VECTORS_MAX } from './task-views.js';

// What `embed_batch` says of itself in tools/list: its description, input and output schemas.

/** Most texts (or items) given inline; more go in a file (`POST /v1/files`). */
export const INLINE_MAX = 10_000;
/** Jobs of at most this many inline texts are waited for when the caller did not ask for a task. */
export const WAIT_ROWS = VECTORS_MAX;

/** The tool's description, naming the pools a job may run on. */
export function describeTool(pools: string[]): string {
  return `Embed many texts as one batch job that runs on the embedding pool's spare capacity (interactive embed calls go first) and survives worker loss. Give exactly one of texts (up to ${count(INLINE_MAX)}), items ({id, text}, up to ${count(INLINE_MAX)}) or file_id (a JSONL file uploaded with POST /v1/files); pool is one of ${pools.join(', ')}. Call it as an MCP Task to follow it with tasks/get from any replica. Without a task, a job of at most ${count(WAIT_ROWS)} inline texts is waited for up to the call's deadline and answered with its vectors; any other answers at once with its job_id. A result of at most ${count(VECTORS_MAX)} texts carries structuredContent.vectors in input order (ids in structuredContent.ids; inline texts have their index as id); a larger one names output_file_id.`;
}

/** The tool's input schema: exactly one of texts, items or file_id, and the pool. */
export function inputSchemaOf(pools: string[]): JsonSchema {
  return {
    type: 'object',
    properties: {
      texts: {
        type: 'array',
        items: { type: 'string', minLength: 1 },
        minItems: 1,
        maxItems: INLINE_MAX,
        description: `Texts to embed (1-${INLINE_MAX}); row i of the result has id "i".`,
      },
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            id: { type: 'string', minLength: 1, maxLength: 512 },
            text: { type: 'string', minLength: 1 },
          },
          required: ['id', 'text'],
          additionalProperties: false,
        },
        minItems: 1,
        maxItems: INLINE_MAX,
        description: `Texts with ids of your own (1-${INLINE_MAX}).`,
      },
      file_id: {
        type: 'string',
        minLength: 1,
        description: 'A JSONL input file uploaded with POST /v1/files (OpenAI Batch or {"id","text"} lines).',
      },
      pool: {
        type: 'string',
        enum: pools,
        description: 'The pool whose embed tool runs the job.',
      },
    },
    additionalProperties: false,
  };
}

/** The tool's output schema: the job's summary, and the vectors of a small one. */
export const OUTPUT_SCHEMA: JsonSchema = {
  type: 'object',
  properties: {
    job_id: { type: 'string' },
    status: {
      type: 'string',
      enum: [
        'validating',
        'in_progress',
        'finalizing',
        'completed',
        'failed',
        'cancelling',
        'cancelled',
        'expired',
      ],
    },
    pool: { type: 'string' },
    model: { type: 'string' },
    counts: {
      type: 'object',
      properties: {
        total: { type: 'integer' },
        completed: { type: 'integer' },
        failed: { type: 'integer' },
      },
      required: ['total', 'completed', 'failed'],
    },
    output_file_id: { type: 'string' },
    error_file_id: { type: 'string' },
    dimensions: { type: 'integer', minimum: 0 },
    ids: { type: 'array', items: { type: 'string' } },
    vectors: { type: 'array', items: { type: 'array', items: { type: 'number' } } },
    failures: {
      type: 'array',
      items: {
        type: 'object',
        properties: { id: { type: 'string' }, code: { type: 'string' }, message: { type: 'string' } },
        required: ['id', 'message'],
      },
    },
    errors: {
      type: 'array',
      items: {
        type: 'object',
        properties: { line: { type: 'integer' }, message: { type: 'string' } },
        required: ['message'],
      },
    },
  },
  required: ['job_id', 'status', 'pool', 'model', 'counts'],
};
