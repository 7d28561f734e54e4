/**
 * POST /v1/embeddings as vLLM answers it. The simulated GPU runs one embeddings request (one
 * batch, or several back to back above `embedMaxBatchTokens`) at a time; each batch costs
 * `embedFixedMs + embedPerTokenMs × tokens`, so batching several texts into one request is much
 * cheaper than sending them one by one — what the cluster's micro-batcher exploits. TEI's
 * `/embed` (tei.ts) runs on the same simulated GPU through `runOnEmbedGpu`.
 */

import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { badRequest, SimRequestError, sendJson } from './http-io.js';
import {
  embedBatchMs,
  embedGpuBatches,
  estimateTokens,
  type ReleaseSlot,
  SimAbortedError,
  sleep,
} from './latency-model.js';
import { embeddingVector } from './seeded-output.js';
import { countEmbedRequest, type SimState, trackOutcome } from './sim-state.js';

/** A validated embeddings request. */
export interface EmbeddingsRequest {
  model: string;
  inputs: string[];
  encodingFormat: 'float' | 'base64';
  /** Σ estimateTokens(input): chars/4 rounded up, at least 1 per input. */
  totalTokens: number;
  /** estimateTokens of each input, in order. */
  inputTokens: number[];
}

/** Checks an embeddings body; throws SimRequestError (400/404) naming the field at fault. */
export function parseEmbeddingsRequest(state: SimState, body: Record<string, unknown>): EmbeddingsRequest {
  const { options } = state;
  const model = body.model ?? options.embeddingModel;
  if (typeof model !== 'string') throw badRequest('model', 'model must be a string');
  if (model === options.model) {
    throw badRequest('model', `The model \`${model}\` is a chat model and does not support embeddings.`);
  }
  if (model !== options.embeddingModel) {
    throw new SimRequestError(404, 'NotFoundError', `The model \`${model}\` does not exist.`, 'model');
  }

  const input = body.input;
  let inputs: string[];
  if (typeof input === 'string') {
    inputs = [input];
  } else if (Array.isArray(input)) {
    if (input.length === 0) throw badRequest('input', 'input must not be an empty array');
    if (input.length > options.maxEmbedBatch) {
      throw badRequest(
        'input',
        `input has ${input.length} items, more than this server's limit of ${options.maxEmbedBatch} per request`,
      );
    }
    inputs = input.map((item: unknown, i) => {
      // OpenAI also accepts token-id arrays; the simulated model reads text only.
      if (typeof item !== 'string') throw badRequest(`input[${i}]`, `input[${i}] must be a string`);
      return item;
    });
  } else {
    throw badRequest('input', 'input is required and must be a string or an array of strings');
  }

  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') {
    throw badRequest('encoding_format', 'encoding_format must be "float" or "base64"');
  }

  const dimensions = body.dimensions;
  if (dimensions !== undefined && dimensions !== null && dimensions !== options.embeddingDimensions) {
    throw badRequest(
      'dimensions',
      `dimensions must be ${options.embeddingDimensions} (this model's only size), got ${JSON.stringify(dimensions)}`,
    );
  }

  const inputTokens = inputs.map(estimateTokens);
  return {
    model,
    inputs,
    encodingFormat: format,
    totalTokens: inputTokens.reduce((sum, tokens) => sum + tokens, 0),
    inputTokens,
  };
}

/**
 * Waits for the simulated GPU, holds it for the cost of the inputs' batches (split at
 * `embedMaxBatchTokens`), counts them and gives the GPU back. Rejects with SimAbortedError,
 * holding nothing, when the client leaves first.
 */
export async function runOnEmbedGpu(
  state: SimState,
  inputTokens: readonly number[],
  clientGone: AbortSignal,
): Promise<void> {
  const { options, counters } = state;
  let release: ReleaseSlot | undefined;
  try {
    release = await state.embedGpu.acquire(clientGone);
    const batches = embedGpuBatches(options, inputTokens);
    await sleep(
      batches.reduce((ms, tokens) => ms + embedBatchMs(options, tokens), 0),
      clientGone,
    );
    counters.embedGpuBatches += batches.length;
    counters.embedTokens += batches.reduce((sum, tokens) => sum + tokens, 0);
  } finally {
    release?.();
  }
}

/** Little-endian float32 bytes in base64, as vLLM and OpenAI encode `encoding_format: "base64"`. */
function toBase64(vector: number[]): string {
  const floats = Float32Array.from(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}

/** Runs an accepted embeddings request: waits for the GPU, holds it for the batch's cost, answers. */
export async function runEmbeddings(
  state: SimState,
  request: EmbeddingsRequest,
  res: ServerResponse,
  clientGone: AbortSignal,
): Promise<void> {
  const { options } = state;
  countEmbedRequest(state, request.inputs.length);
  trackOutcome(state, res, clientGone);

  try {
    await runOnEmbedGpu(state, request.inputTokens, clientGone);
    const data = request.inputs.map((text, index) => {
      const vector = embeddingVector(text, options.embeddingDimensions);
      return {
        object: 'embedding',
        index,
        embedding: request.encodingFormat === 'base64' ? toBase64(vector) : vector,
      };
    });
    sendJson(res, 200, {
      id: `embd-${randomUUID().replaceAll('-', '')}`,
      object: 'list',
      created: Math.floor(Date.now() / 1000),
      model: request.model,
      data,
      usage: { prompt_tokens: request.totalTokens, total_tokens: request.totalTokens },
    });
  } catch (err) {
    if (err instanceof SimAbortedError) return;
    throw err;
  }
}
