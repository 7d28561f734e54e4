import { ClusterError } from '../../services/core/index.js';
import {
  type AdapterContext,
  postJson,
  readSse,
  type ToolAdapter,
  type ToolResult,
} from '../runtime/index.js';

/** Least time between two progress notifications of one call, in milliseconds. */
export const PROGRESS_INTERVAL_MS = 100;

interface ChatChunk {
  choices?: { delta?: { content?: unknown }; finish_reason?: unknown }[];
}

/**
 * `generate_text` against an OpenAI-compatible chat completions endpoint (vLLM's
 * `/v1/chat/completions`), streamed: tokens arrive as SSE chunks and become progress carrying
 * the text so far, at most one notification per PROGRESS_INTERVAL_MS. Cancelling the call
 * closes the stream, which makes vLLM abort the sequence and free its KV cache.
 */
export const generateTextAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    const args = ctx.call.arguments as {
      prompt: string;
      max_tokens?: number;
      temperature?: number;
      system?: string;
    };
    const messages = [
      ...(args.system ? [{ role: 'system', content: args.system }] : []),
      { role: 'user', content: args.prompt },
    ];
    const url = new URL('/v1/chat/completions', ctx.endpointUrl).toString();
    const res = await postJson(
      url,
      {
        model: ctx.tool.model,
        messages,
        max_tokens: args.max_tokens ?? 256,
        temperature: args.temperature ?? 0.7,
        stream: true,
        stream_options: { include_usage: true },
        // vLLM routes on this to reuse a conversation's prefix cache; other servers ignore it.
        ...(ctx.call.sessionKey ? { user: ctx.call.sessionKey } : {}),
      },
      ctx.signal,
      ctx.backendTimeoutMs,
    );
    const maxTokens = args.max_tokens ?? 256;
    let text = '';
    let tokens = 0;
    let finished = false;
    let lastProgressAt = Number.NEGATIVE_INFINITY;
    for await (const data of readSse(res, url, ctx.signal)) {
      if (data === '[DONE]') {
        finished = true;
        break;
      }
      let chunk: ChatChunk;
      try {
        chunk = JSON.parse(data) as ChatChunk;
      } catch (err) {
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `backend ${url} sent a stream chunk that is not JSON: ${data.slice(0, 80)}`,
          { cause: err },
        );
      }
      const delta = chunk.choices?.[0]?.delta?.content;
      if (typeof delta === 'string' && delta.length > 0) {
        text += delta;
        tokens += 1;
        const now = performance.now();
        if (now - lastProgressAt >= PROGRESS_INTERVAL_MS) {
          lastProgressAt = now;
          ctx.progress({ progress: tokens, total: maxTokens, message: text });
        }
      }
    }
    if (!finished) {
      if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');
      throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} ended the stream before [DONE]`);
    }
    return { content: [{ type: 'text', text }] };
  },
};
