/**
 * Hugging Face Text Embeddings Inference (TEI) wire format, next to the OpenAI one:
 * `POST /embed` {inputs: string | string[], normalize?: boolean = true, truncate?: boolean =
 * true (TEI's auto-truncate), dimensions?} → a JSON array of float arrays, one per input in
 * order; `GET /info`. Errors are TEI's `{error, error_type}` with TEI's status codes: 400
 * `Empty`, 413 for a body over the limit, 422 `Validation`, 429 `Overloaded`, 503 `Unhealthy`.
 * Runs on the same simulated GPU as `/v1/embeddings` and counts in the same stats.
 */

import type { ServerResponse } from 'node:http';
import { runOnEmbedGpu } from './embeddings.js';
import { sendJson } from './http-io.js';
import { estimateTokens, SimAbortedError } from './latency-model.js';
import { embeddingNorm, embeddingVector } from './seeded-output.js';
import { countEmbedRequest, type SimState, trackOutcome } from './sim-state.js';

/** TEI's `error_type` values. */
export type TeiErrorType = 'Unhealthy' | 'Backend' | 'Overloaded' | 'Validation' | 'Tokenizer' | 'Empty';

/** A request `/embed` refuses, answered as TEI does. */
export class TeiError extends Error {
  override readonly name = 'TeiError';
  constructor(
    readonly status: number,
    readonly errorType: TeiErrorType,
    message: string,
  ) {
    super(message);
  }
}

/** Answers with TEI's error body `{error, error_type}`. */
export function sendTeiError(
  res: ServerResponse,
  error: TeiError,
  headers: Record<string, string> = {},
): void {
  sendJson(res, error.status, { error: error.message, error_type: error.errorType }, headers);
}

function validation(message: string): TeiError {
  return new TeiError(422, 'Validation', message);
}

/** A validated `/embed` request. */
export interface TeiEmbedRequest {
  /** The inputs, each already cut to `embedMaxInputTokens` when truncation applies. */
  inputs: string[];
  normalize: boolean;
  /** Tokens of each input after truncation, in order. */
  inputTokens: number[];
  /** Characters of the inputs as sent (TEI's `x-compute-characters`). */
  characters: number;
}

/** Parses and checks an `/embed` body; throws TeiError as TEI would answer it. */
export function parseTeiEmbedRequest(state: SimState, body: Buffer): TeiEmbedRequest {
  const { options } = state;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw validation(
      `Failed to parse the request body as JSON: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw validation('Failed to deserialize the JSON body: expected an object with `inputs`');
  }
  const request = value as Record<string, unknown>;
  const raw = request.inputs;
  let inputs: string[];
  if (typeof raw === 'string') {
    inputs = [raw];
  } else if (Array.isArray(raw)) {
    if (raw.length === 0) throw new TeiError(400, 'Empty', '`inputs` cannot be empty');
    if (raw.length > options.maxEmbedBatch) {
      throw validation(`batch size ${raw.length} > maximum allowed batch size ${options.maxEmbedBatch}`);
    }
    inputs = raw.map((item: unknown, i) => {
      // TEI also takes token ids; the simulated model reads text only.
      if (typeof item !== 'string') throw validation(`inputs[${i}] must be a string`);
      return item;
    });
  } else if (raw === undefined) {
    throw validation('Failed to deserialize the JSON body: missing field `inputs`');
  } else {
    throw validation('`inputs` must be a string or an array of strings');
  }

  const flag = (field: string, fallback: boolean): boolean => {
    const v = request[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw validation(`\`${field}\` must be a boolean`);
    return v;
  };
  const normalize = flag('normalize', true);
  const truncate = flag('truncate', true);
  const dimensions = request.dimensions;
  if (dimensions !== undefined && dimensions !== null && dimensions !== options.embeddingDimensions) {
    throw validation(
      `\`dimensions\` must be ${options.embeddingDimensions} (this model's only size), got ${JSON.stringify(dimensions)}`,
    );
  }

  const max = options.embedMaxInputTokens;
  let characters = 0;
  const inputTokens: number[] = [];
  const cut = inputs.map((text) => {
    characters += text.length;
    const tokens = estimateTokens(text);
    if (tokens <= max) {
      inputTokens.push(tokens);
      return text;
    }
    if (!truncate) {
      throw validation(
        `Input validation error: \`inputs\` must have less than ${max} tokens. Given: ${tokens}`,
      );
    }
    inputTokens.push(max);
    return text.slice(0, max * 4);
  });
  return { inputs: cut, normalize, inputTokens, characters };
}

/** Runs an accepted `/embed` request on the simulated GPU and answers with the vectors. */
export async function runTeiEmbed(
  state: SimState,
  request: TeiEmbedRequest,
  res: ServerResponse,
  clientGone: AbortSignal,
): Promise<void> {
  const { options } = state;
  const n = request.inputs.length;
  // TEI takes one concurrency permit per input and refuses at once when they run out.
  if (state.teiInFlight + n > options.embedMaxConcurrentRequests) {
    throw new TeiError(429, 'Overloaded', 'Model is overloaded');
  }
  countEmbedRequest(state, n);
  trackOutcome(state, res, clientGone);
  state.teiInFlight += n;
  const startedAt = performance.now();
  try {
    await runOnEmbedGpu(state, request.inputTokens, clientGone);
    const vectors = request.inputs.map((text) => {
      const vector = embeddingVector(text, options.embeddingDimensions);
      if (request.normalize) return vector;
      const norm = embeddingNorm(text);
      return vector.map((x) => x * norm);
    });
    const tokens = request.inputTokens.reduce((sum, t) => sum + t, 0);
    sendJson(res, 200, vectors, {
      'x-compute-type': 'gpu+optimized',
      'x-compute-characters': String(request.characters),
      'x-compute-tokens': String(tokens),
      'x-compute-time': String(Math.round(performance.now() - startedAt)),
    });
  } catch (err) {
    if (err instanceof SimAbortedError) return;
    throw err;
  } finally {
    state.teiInFlight -= n;
  }
}

/** `GET /info` as TEI answers it, for the simulated embeddings model. */
export function teiInfo(state: SimState) {
  const { options } = state;
  return {
    model_id: options.embeddingModel,
    model_sha: null,
    model_dtype: 'float16',
    served_model_name: options.embeddingModel,
    model_type: { embedding: { pooling: 'cls' } },
    max_concurrent_requests: options.embedMaxConcurrentRequests,
    max_input_length: options.embedMaxInputTokens,
    max_batch_tokens: options.embedMaxBatchTokens,
    max_batch_requests: null,
    max_client_batch_size: options.maxEmbedBatch,
    auto_truncate: true,
    tokenization_workers: 1,
    version: 'sim',
    sha: null,
    docker_label: null,
  };
}
