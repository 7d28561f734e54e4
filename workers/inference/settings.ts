import { z } from 'zod';
import { type ToolSettingsOf, toolSettings } from '../../services/core/index.js';

/** The settings of an inference tool (generate_text, chat, summarize), beside what every tool has. */
export const inferenceSettings = toolSettings({
  /** Largest `max_tokens` a caller may ask for; summarize asks for what its word budget needs, up to this. */
  maxTokens: z.number().int().min(1).max(1_000_000).default(4096),
  /** Longest prompt, system prompt, message or text to summarise, in characters. */
  maxTextLength: z.number().int().min(1).max(10_000_000).default(100_000),
});

/** An inference tool's settings, resolved. */
export type InferenceToolSettings = ToolSettingsOf<typeof inferenceSettings>;
