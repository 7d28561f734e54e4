import { z } from 'zod';
import { duration, section, type ToolSettingsOf, toolSettings } from '../../services/core/index.js';

/** The settings of an `embed` tool, beside what every tool has. */
export const embedSettings = toolSettings({
  /** Most texts in one call. */
  maxTexts: z.number().int().min(1).max(100_000).default(256),
  /** Longest text in characters. */
  maxTextLength: z.number().int().min(1).max(10_000_000).default(100_000),
  /** Micro-batching across calls: a batch closes at maxSize texts, maxTokens tokens or after maxWait. */
  batch: section({
    // 32 is TEI's default --max-client-batch-size; raise it for vLLM or a TEI allowing more.
    /** Most texts in one backend request. */
    maxSize: z.number().int().min(1).max(100_000).default(32),
    /** Most estimated tokens in one backend request. */
    maxTokens: z.number().int().min(1).max(10_000_000).default(16_384),
    /** Longest a batch waits for more texts after its first; resolved as `maxWaitMs`. */
    maxWait: duration('5ms'),
    /**
     * While interactive calls are about (one within the last second), the least time between two
     * backend requests of batch-job texts (priority low), resolved as `backgroundPauseMs`. The
     * backend cannot interrupt a batch, so the time it spends on batch work is the chance an
     * interactive call waits for one: the default keeps that near 5% (interactive p95 within about
     * 20%), and batch jobs run at full speed when no interactive call comes. 0: batch jobs take
     * every slot interactive calls leave (faster jobs, slower interactive calls).
     */
    backgroundPause: duration('200ms'),
  }).prefault({}),
  /** Result cache, keyed by model, normalisation and a hash of the text. */
  cache: section({
    enabled: z.boolean().default(true),
    /** How long a vector stays cached; resolved as `ttlMs`. */
    ttl: duration('1h'),
    /** Most vectors an in-process cache holds (least recently used go first). */
    maxEntries: z.number().int().min(1).max(100_000_000).default(100_000),
  }).prefault({}),
});

/** An embed tool's settings, resolved (`batch.maxWaitMs`, `cache.ttlMs`). */
export type EmbedToolSettings = ToolSettingsOf<typeof embedSettings>;
