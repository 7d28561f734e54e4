/**
 * The inference tools `generate_text`, `chat` and `summarize` against an OpenAI-compatible
 * chat completions endpoint (vLLM's `/v1/chat/completions`). All three stream through one
 * function, `streamChatCompletion`: tokens become progress carrying the text so far, the
 * session key travels as the OpenAI `user` field, and a stream that stalls for
 * `backendTimeoutMs` fails with BACKEND_UNAVAILABLE.
 */

import type { ToolFamily, ToolTemplate } from '../../services/core/index.js';
import type { AdapterContext, ToolAdapter, ToolResult } from '../runtime/index.js';
import { type ChatMessage, streamChatCompletion } from './chat-stream.js';
import { chatInput, generateTextInput, summarizeInput } from './schemas.js';
import { inferenceSettings } from './settings.js';
import {
  DEFAULT_SUMMARY_WORDS,
  SUMMARY_TEMPERATURE,
  summaryMaxTokens,
  summaryPrompt,
  trimToWords,
} from './summary.js';

export type { ChatCompletion, ChatCompletionRequest, ChatMessage } from './chat-stream.js';
export { PROGRESS_INTERVAL_MS, streamChatCompletion } from './chat-stream.js';
export type { InferenceToolSettings } from './settings.js';
export { inferenceSettings } from './settings.js';
export {
  DEFAULT_SUMMARY_WORDS,
  SUMMARY_TEMPERATURE,
  SUMMARY_TOKENS_PER_WORD,
  summaryMaxTokens,
  summaryPrompt,
  trimToWords,
} from './summary.js';

/** `max_tokens` when a call gives none (the input schemas' default). */
export const DEFAULT_MAX_TOKENS = 256;
/** `temperature` when a call gives none (the input schemas' default). */
export const DEFAULT_TEMPERATURE = 0.7;

const textResult = (text: string): ToolResult => ({ content: [{ type: 'text', text }] });

/**
 * `generate_text(prompt, max_tokens?, temperature?, system?)`: the prompt as a user message,
 * after the optional system prompt. Cancelling the call closes the stream, which makes vLLM
 * abort the sequence and free its KV cache.
 */
export const generateTextAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    const args = ctx.arguments as {
      prompt: string;
      max_tokens?: number;
      temperature?: number;
      system?: string;
    };
    const messages: ChatMessage[] = [
      ...(args.system ? [{ role: 'system' as const, content: args.system }] : []),
      { role: 'user', content: args.prompt },
    ];
    const { text } = await streamChatCompletion(ctx, {
      messages,
      maxTokens: args.max_tokens ?? DEFAULT_MAX_TOKENS,
      temperature: args.temperature ?? DEFAULT_TEMPERATURE,
    });
    return textResult(text);
  },
};

/**
 * `chat(messages, max_tokens?, temperature?)`: the conversation goes to the backend as given
 * (oldest first); the result is the assistant's reply. Follow-up turns of one session share a
 * prefix, which the router's session affinity lets the backend's prefix cache reuse.
 */
export const chatAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    const args = ctx.arguments as {
      messages: ChatMessage[];
      max_tokens?: number;
      temperature?: number;
    };
    const { text } = await streamChatCompletion(ctx, {
      messages: args.messages.map((m) => ({ role: m.role, content: m.content })),
      maxTokens: args.max_tokens ?? DEFAULT_MAX_TOKENS,
      temperature: args.temperature ?? DEFAULT_TEMPERATURE,
    });
    return textResult(text);
  },
};

/**
 * `summarize(text, max_words?)`: a system prompt asks for at most `max_words` words, the text
 * is the user message, `max_tokens` is `summaryMaxTokens(max_words)` (SUMMARY_TOKENS_PER_WORD
 * tokens per word) and the temperature is SUMMARY_TEMPERATURE. Models do not count words
 * exactly, so a reply that overruns is trimmed to its first `max_words` words (silently: the
 * result is the summary alone); progress shows the summary so far, trimmed the same way.
 */
export const summarizeAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    const args = ctx.arguments as { text: string; max_words?: number };
    const maxWords = args.max_words ?? DEFAULT_SUMMARY_WORDS;
    const present = (text: string) => trimToWords(text, maxWords);
    const { text } = await streamChatCompletion(ctx, {
      messages: [
        { role: 'system', content: summaryPrompt(maxWords) },
        { role: 'user', content: args.text },
      ],
      maxTokens: summaryMaxTokens(maxWords, inferenceSettings.of(ctx.tool).maxTokens),
      temperature: SUMMARY_TEMPERATURE,
      present,
    });
    return textResult(present(text));
  },
};

/** The adapters of the inference pool, by tool template. */
export const inferenceAdapters = {
  generate_text: generateTextAdapter,
  chat: chatAdapter,
  summarize: summarizeAdapter,
} as const satisfies Partial<Record<ToolTemplate, ToolAdapter>>;

/** Backend kinds of the inference templates. */
const CHAT = ['openai-chat'] as const;

/**
 * The inference family: `generate_text`, `chat` and `summarize` on OpenAI-compatible chat
 * completions (`openai-chat`: vLLM and the like, probed at `/health`, 16 calls per endpoint to
 * match vLLM's default `--max-num-seqs`), and the built-in pool `inference` serving all three.
 */
export const inferenceFamily: ToolFamily<ToolAdapter> = {
  name: 'inference',
  backends: { 'openai-chat': { healthPath: '/health', endpointConcurrency: 16 } },
  settings: inferenceSettings,
  templates: {
    generate_text: {
      description:
        'Generate text from a prompt with a large language model. Tokens stream as progress notifications when a progress token is given.',
      backends: CHAT,
      inputSchema: generateTextInput,
      adapter: () => generateTextAdapter,
    },
    chat: {
      description:
        'Continue a conversation with a large language model: give the messages so far, get the assistant reply. Tokens stream as progress notifications when a progress token is given.',
      backends: CHAT,
      inputSchema: chatInput,
      adapter: () => chatAdapter,
    },
    summarize: {
      description: 'Summarize a text in at most max_words words with a large language model.',
      backends: CHAT,
      inputSchema: summarizeInput,
      adapter: () => summarizeAdapter,
    },
  },
  defaults: {
    pool: 'inference',
    backend: 'openai-chat',
    tools: [
      { name: 'generate_text', template: 'generate_text', model: 'sim-llm', deadline: '120s' },
      { name: 'chat', template: 'chat', model: 'sim-llm', deadline: '120s' },
      { name: 'summarize', template: 'summarize', model: 'sim-llm', deadline: '120s' },
    ],
  },
};
