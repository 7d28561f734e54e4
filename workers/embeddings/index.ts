import { ClusterError } from '../../services/core/index.js';
import {
  type AdapterContext,
  postJson,
  readJson,
  type ToolAdapter,
  type ToolResult,
} from '../runtime/index.js';

interface EmbeddingsResponse {
  data?: { index?: unknown; embedding?: unknown }[];
  model?: unknown;
}

/**
 * `embed` against an OpenAI-compatible `/v1/embeddings` endpoint (vLLM, OpenAI). Returns the
 * vectors, one per text in order, in `structuredContent` (matching the tool's outputSchema)
 * and a short text summary for clients that only read `content`.
 */
export const embedAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    const args = ctx.call.arguments as { texts: string[]; model?: string; normalize?: boolean };
    const model = args.model ?? ctx.tool.model;
    const url = new URL('/v1/embeddings', ctx.endpointUrl).toString();
    const res = await postJson(
      url,
      { model, input: args.texts, encoding_format: 'float' },
      ctx.signal,
      ctx.backendTimeoutMs,
    );
    const body = (await readJson(res, url, ctx.signal)) as EmbeddingsResponse;
    const vectors = parseVectors(body, args.texts.length, url);
    const out = args.normalize === false ? vectors : vectors.map(normalize);
    const dimensions = out[0]?.length ?? 0;
    return {
      content: [{ type: 'text', text: `${out.length} embeddings of ${dimensions} dimensions from ${model}` }],
      structuredContent: { model, dimensions, vectors: out },
    };
  },
};

function parseVectors(body: EmbeddingsResponse, expected: number, url: string): number[][] {
  if (!Array.isArray(body.data))
    throw new ClusterError('BACKEND_PROTOCOL', `backend ${url} answered without a data array`);
  if (body.data.length !== expected) {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `backend ${url} returned ${body.data.length} embeddings for ${expected} texts`,
    );
  }
  const vectors: number[][] = new Array(expected);
  body.data.forEach((item, position) => {
    const index = typeof item.index === 'number' ? item.index : position;
    const embedding = item.embedding;
    if (!Array.isArray(embedding) || !embedding.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `backend ${url} returned a malformed embedding at index ${index}`,
      );
    }
    if (index < 0 || index >= expected || vectors[index]) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `backend ${url} returned an embedding with a bad index ${index}`,
      );
    }
    vectors[index] = embedding as number[];
  });
  return vectors;
}

function normalize(vector: number[]): number[] {
  const norm = Math.hypot(...vector);
  return norm === 0 ? vector : vector.map((x) => x / norm);
}
