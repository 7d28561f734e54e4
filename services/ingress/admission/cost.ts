// What a call costs its pool, estimated at the ingress from the call's arguments before anything
// is queued. Fair queueing shares a pool's queue by cost, not by calls: one generation of 4000
// tokens weighs as much as 40 of 100, one image of 1024x1024 at 30 steps as six of 512x512 at 20.
// The ingress estimates from the arguments alone (the backend's tokenizer is not here), so each
// estimate is a cheap, deterministic upper-ish bound, never a measurement.
//
// The table is keyed by tool template and lives in the ingress (the ingress imports no worker
// family); a template it does not know costs 1 per call.

/** Cost of a call, in its pool's units, from its arguments (already completed with schema defaults). */
export type CostEstimator = (args: Record<string, unknown>) => number;

/** Characters per token of the estimate: about 4 for English text with the common BPE vocabularies. */
export const CHARS_PER_TOKEN = 4;
/** Tokens a summary is allowed per word (the inference family's budget, `summarize`). */
const SUMMARY_TOKENS_PER_WORD = 2;
const SUMMARY_EXTRA_TOKENS = 8;
/** max_tokens of an inference call whose schema gives no default (the inference family's default). */
const DEFAULT_MAX_TOKENS = 256;

const textLength = (value: unknown): number => {
  if (typeof value === 'string') return value.length;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + textLength(v), 0);
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    // A chat message (`content`) or a content part (`text`).
    return textLength(o.content ?? o.text ?? '');
  }
  return 0;
};
const tokensOf = (chars: number) => Math.ceil(chars / CHARS_PER_TOKEN);
const positive = (value: unknown, fallback: number): number =>
  typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : fallback;

/**
 * Estimators by tool template:
 * - inference (`generate_text`, `chat`): prompt tokens (characters / 4, rounded up) + `max_tokens`
 *   (the schema's default when the call gives none); `summarize`: text tokens + the summary's
 *   budget of 2 tokens per `max_words` + 8. Unit: tokens.
 * - embeddings (`embed`): the number of texts. Unit: texts.
 * - diffusion (`generate_image`): steps x width x height / 1e6. Unit: megapixel-steps.
 */
export const COST_ESTIMATORS: Readonly<Record<string, CostEstimator>> = {
  generate_text: (a) =>
    tokensOf(textLength(a.prompt) + textLength(a.system)) + positive(a.max_tokens, DEFAULT_MAX_TOKENS),
  chat: (a) => tokensOf(textLength(a.messages)) + positive(a.max_tokens, DEFAULT_MAX_TOKENS),
  summarize: (a) =>
    tokensOf(textLength(a.text)) +
    positive(a.max_words, 100) * SUMMARY_TOKENS_PER_WORD +
    SUMMARY_EXTRA_TOKENS,
  embed: (a) => (Array.isArray(a.texts) ? Math.max(1, a.texts.length) : 1),
  generate_image: (a) =>
    (positive(a.steps, 20) * positive(a.width, 512) * positive(a.height, 512)) / 1_000_000,
};

/** The estimator of `template`: its entry in {@link COST_ESTIMATORS}, else 1 per call. */
export function costEstimatorOf(template: string): CostEstimator {
  return COST_ESTIMATORS[template] ?? (() => 1);
}

/**
 * Default `pools.<p>.fairQueue.size` by backend kind, in the kind's cost units. Each holds enough
 * queued work to keep the pool's workers fed between two takes while leaving several calls' worth
 * to each of a handful of backlogged tenants:
 * - openai-chat: 16384 tokens, e.g. 4 tenants x 4 calls of ~1000 tokens (a vLLM replica runs 16 at once).
 * - openai-embeddings, tei: 2048 texts, 8 micro-batches of 256 (embedding calls are small and fast).
 * - comfyui: 200 megapixel-steps, about 6 images of 1024x1024 at 30 steps (ComfyUI runs one at a time).
 * - any other kind: 64 (its templates cost 1 per call: 64 calls).
 */
export const DEFAULT_FAIR_QUEUE_SIZE: Readonly<Record<string, number>> = {
  'openai-chat': 16_384,
  'openai-embeddings': 2_048,
  tei: 2_048,
  comfyui: 200,
};
/** Default fair queue size of a backend kind not in {@link DEFAULT_FAIR_QUEUE_SIZE}, in calls. */
export const DEFAULT_FAIR_QUEUE_CALLS = 64;
