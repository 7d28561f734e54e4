/**
 * The two wire protocols of an embedding backend: OpenAI-compatible `POST /v1/embeddings`
 * (vLLM, OpenAI) and Hugging Face text-embeddings-inference `POST /embed`. Each sends one batch
 * of texts and returns one vector per text, in order, or throws a ClusterError.
 */

import { ClusterError } from '../../services/core/index.js';
import { BackendRefusal, type BackendResponse, postJson, readJson } from '../runtime/index.js';

interface EmbeddingsResponse {
  data?: { index?: unknown; embedding?: unknown }[];
  model?: unknown;
}

/** `POST /v1/embeddings` with `{model, input, encoding_format: "float"}`; vectors as the backend sent them. */
export async function embedOpenAI(
  endpointUrl: string,
  model: string,
  texts: string[],
  signal: AbortSignal,
  timeoutMs: number,
): Promise<number[][]> {
  const url = new URL('/v1/embeddings', endpointUrl).toString();
  const res = await postJson(url, { model, input: texts, encoding_format: 'float' }, signal, timeoutMs);
  const body = (await readJson(res, url, signal)) as EmbeddingsResponse;
  return parseOpenAIVectors(body, texts.length, url);
}

function parseOpenAIVectors(body: EmbeddingsResponse, expected: number, url: string): number[][] {
  if (!Array.isArray(body?.data))
    throw new ClusterError('BACKEND_PROTOCOL', `backend ${url} answered without a data array`);
  if (body.data.length !== expected) {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `backend ${url} returned ${body.data.length} embeddings for ${expected} texts`,
    );
  }
  const vectors: number[][] = new Array(expected);
  body.data.forEach((item, position) => {
    const index = typeof item?.index === 'number' ? item.index : position;
    const embedding = item?.embedding;
    if (!isVector(embedding)) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `backend ${url} returned a malformed embedding at index ${index}`,
      );
    }
    if (!Number.isInteger(index) || index < 0 || index >= expected || vectors[index]) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `backend ${url} returned an embedding with a bad index ${index}`,
      );
    }
    vectors[index] = embedding;
  });
  return vectors;
}

/**
 * TEI's `POST /embed` with `{inputs, normalize, truncate: false}`, answered with `number[][]`.
 * TEI's errors (`{error, error_type}`) map to: 413 and 422 → BACKEND_PROTOCOL with TEI's message
 * (the request was refused, e.g. a text longer than the model takes; the caller can fix it, and
 * the breaker ignores it); 424 (the model failed), 429 (TEI's queue is full) and 5xx →
 * BACKEND_UNAVAILABLE (retried on another delivery).
 */
export async function embedTei(
  endpointUrl: string,
  texts: string[],
  normalize: boolean,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<number[][]> {
  const url = new URL('/embed', endpointUrl).toString();
  let res: BackendResponse;
  try {
    res = await postJson(url, { inputs: texts, normalize, truncate: false }, signal, timeoutMs);
  } catch (err) {
    throw teiError(err, url);
  }
  const body = await readJson(res, url, signal);
  if (!Array.isArray(body)) {
    throw new ClusterError('BACKEND_PROTOCOL', `TEI at ${url} answered without an array of embeddings`);
  }
  if (body.length !== texts.length) {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `TEI at ${url} returned ${body.length} embeddings for ${texts.length} texts`,
    );
  }
  body.forEach((vector, index) => {
    if (!isVector(vector)) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `TEI at ${url} returned a malformed embedding at index ${index}`,
      );
    }
  });
  return body as number[][];
}

/** Rewrites postJson's errors for TEI's status codes; anything else passes unchanged. */
function teiError(err: unknown, url: string): unknown {
  if (!(err instanceof ClusterError) || !(err.cause instanceof BackendRefusal)) return err;
  const refusal = err.cause;
  const detail = refusal.message.replace(/^refused with \d+(: )?/, '');
  switch (refusal.status) {
    case 424:
      return new ClusterError(
        'BACKEND_UNAVAILABLE',
        `TEI at ${url} failed to run the model (424)${detail ? `: ${detail}` : ''}`,
        { cause: err },
      );
    case 413:
      return new ClusterError(
        'BACKEND_PROTOCOL',
        `TEI at ${url} refused the request as too large (413)${detail ? `: ${detail}` : ''}; send fewer or shorter texts`,
        { cause: refusal },
      );
    case 422: {
      const tooLong = /token|too long|truncat|sequence length/i.test(detail);
      return new ClusterError(
        'BACKEND_PROTOCOL',
        `TEI at ${url} refused the texts (422)${detail ? `: ${detail}` : ''}${
          tooLong ? "; a text is longer than the model's maximum input length, shorten it" : ''
        }`,
        { cause: refusal },
      );
    }
    default:
      return err;
  }
}

function isVector(value: unknown): value is number[] {
  return (
    Array.isArray(value) &&
    value.length > 0 &&
    value.every((x) => typeof x === 'number' && Number.isFinite(x))
  );
}
