/**
 * Options of the simulated vLLM backend: the documented type, its defaults, validation of a
 * partial input, and the command-line parser (`--ttft-ms 20` → `{ ttftMs: 20 }`).
 */

/**
 * Settings of one simulated GPU backend. Durations end in `Ms`, sizes in `Bytes`, token counts
 * in `Tokens`. Each option is also a kebab-case command-line flag (`batchPenalty` →
 * `--batch-penalty`).
 */
export interface SimOptions {
  /** Interface to bind. Default `127.0.0.1` (loopback only). */
  host: string;
  /** TCP port to listen on; `0` picks a free port (read it back from `SimBackend.port`). Default `0`. */
  port: number;
  /** Name of the served chat model, as in vLLM's `--served-model-name`. Default `sim-llm`. */
  model: string;
  /** Name of the served embeddings model; must differ from `model`. Default `sim-embed`. */
  embeddingModel: string;
  /** Length of every embedding vector (floats). Default `64`. */
  embeddingDimensions: number;
  /**
   * Fixed part of the time to first token of a chat sequence once it holds a sequence slot
   * (scheduling, the first forward pass), in milliseconds. Default `20`.
   */
  ttftMs: number;
  /**
   * Prefill cost per prompt token that is NOT already in the session's prefix cache, in
   * milliseconds: time to first token = `ttftMs + perPromptTokenMs × uncached prompt tokens`.
   * Default `0.05`.
   */
  perPromptTokenMs: number;
  /**
   * Decode speed of a sequence running alone after its first token, in tokens per second: one
   * decode step of a batch of one takes `1000 / tokensPerSecond` ms. Default `200`.
   */
  tokensPerSecond: number;
  /**
   * Continuous batching: how much each further running sequence slows a decode step, unitless.
   * Every step gives each decoding sequence one token and takes
   * `(1000 / tokensPerSecond) × (1 + batchPenalty × (decoding − 1))` ms, so the per-sequence
   * rate falls and the total rate `decoding / step` rises sublinearly toward
   * `tokensPerSecond / batchPenalty`. `0` makes batching free. Default `0.05`.
   */
  batchPenalty: number;
  /**
   * Chat sequences generated at once, like vLLM's `--max-num-seqs`. Requests beyond it wait in
   * a FIFO and count as waiting. Default `16`.
   */
  maxNumSeqs: number;
  /**
   * Capacity of the prefix cache, in tokens, shared by all sessions (an LRU of sessions; a
   * session is the OpenAI `user` field of a chat request). `0` disables prefix caching.
   * Default `262144`.
   */
  prefixCacheTokens: number;
  /** Fixed GPU time of one embeddings request (one batch), in milliseconds. Default `5`. */
  embedFixedMs: number;
  /** GPU time per input token of an embeddings request, in milliseconds. Default `0.01`. */
  embedPerTokenMs: number;
  /**
   * Most inputs in one embeddings request; more is answered with 400 on `/v1/embeddings` and
   * with TEI's 422 on `/embed` (TEI's `max_client_batch_size`). Default `256`.
   */
  maxEmbedBatch: number;
  /**
   * Most tokens the simulated GPU embeds in one batch (TEI's `max_batch_tokens`): a request
   * with more tokens runs as several batches back to back, each paying `embedFixedMs`. Default `16384`.
   */
  embedMaxBatchTokens: number;
  /**
   * Longest input of `/embed`, in tokens (TEI's `max_input_length`): longer inputs are cut to
   * it when `truncate` is true (the default) and refused with 422 otherwise. Default `512`.
   */
  embedMaxInputTokens: number;
  /**
   * Inputs `/embed` accepts in flight at once (TEI's `max_concurrent_requests`; each input of a
   * batch counts): a request that would exceed it is answered 429 "Model is overloaded".
   * Default `512`.
   */
  embedMaxConcurrentRequests: number;
  /** Largest request body accepted, in bytes; more is answered with 413. Default `4194304` (4 MiB). */
  maxBodyBytes: number;
}

/** The defaults documented on `SimOptions`. */
export const simOptionDefaults: Readonly<SimOptions> = Object.freeze({
  host: '127.0.0.1',
  port: 0,
  model: 'sim-llm',
  embeddingModel: 'sim-embed',
  embeddingDimensions: 64,
  ttftMs: 20,
  perPromptTokenMs: 0.05,
  tokensPerSecond: 200,
  batchPenalty: 0.05,
  maxNumSeqs: 16,
  prefixCacheTokens: 262_144,
  embedFixedMs: 5,
  embedPerTokenMs: 0.01,
  maxEmbedBatch: 256,
  embedMaxBatchTokens: 16_384,
  embedMaxInputTokens: 512,
  embedMaxConcurrentRequests: 512,
  maxBodyBytes: 4 * 1024 * 1024,
});

type StringKey = 'host' | 'model' | 'embeddingModel';
type NumberKey = Exclude<keyof SimOptions, StringKey>;

interface NumberRule {
  integer: boolean;
  min: number;
  /** Whether `min` itself is allowed. */
  minInclusive: boolean;
  max: number;
}

const numberRules: Record<NumberKey, NumberRule> = {
  port: { integer: true, min: 0, minInclusive: true, max: 65_535 },
  embeddingDimensions: { integer: true, min: 1, minInclusive: true, max: 65_536 },
  ttftMs: { integer: false, min: 0, minInclusive: true, max: 3_600_000 },
  perPromptTokenMs: { integer: false, min: 0, minInclusive: true, max: 60_000 },
  tokensPerSecond: { integer: false, min: 0, minInclusive: false, max: 1_000_000_000 },
  batchPenalty: { integer: false, min: 0, minInclusive: true, max: 1000 },
  maxNumSeqs: { integer: true, min: 1, minInclusive: true, max: 1_000_000 },
  prefixCacheTokens: { integer: true, min: 0, minInclusive: true, max: 1_000_000_000 },
  embedFixedMs: { integer: false, min: 0, minInclusive: true, max: 3_600_000 },
  embedPerTokenMs: { integer: false, min: 0, minInclusive: true, max: 60_000 },
  maxEmbedBatch: { integer: true, min: 1, minInclusive: true, max: 1_000_000 },
  embedMaxBatchTokens: { integer: true, min: 1, minInclusive: true, max: 1_000_000_000 },
  embedMaxInputTokens: { integer: true, min: 1, minInclusive: true, max: 1_000_000_000 },
  embedMaxConcurrentRequests: { integer: true, min: 1, minInclusive: true, max: 1_000_000_000 },
  maxBodyBytes: { integer: true, min: 1, minInclusive: true, max: 1024 * 1024 * 1024 },
};

const stringKeys: readonly StringKey[] = ['host', 'model', 'embeddingModel'];

function isStringKey(key: string): key is StringKey {
  return (stringKeys as readonly string[]).includes(key);
}

function isNumberKey(key: string): key is NumberKey {
  return Object.hasOwn(numberRules, key);
}

/** Why `value` breaks the rule, or undefined when it is fine. */
function numberProblem(value: number, rule: NumberRule): string | undefined {
  if (!Number.isFinite(value)) return 'expected a finite number';
  if (rule.integer && !Number.isInteger(value)) return 'expected an integer';
  if (rule.minInclusive ? value < rule.min : value <= rule.min) {
    return `expected a number ${rule.minInclusive ? '>=' : '>'} ${rule.min}`;
  }
  if (value > rule.max) return `expected a number <= ${rule.max}`;
  return undefined;
}

/**
 * Fills in defaults and checks every option. Throws an Error naming the option and its value
 * when one is out of range, of the wrong type or unknown.
 */
export function resolveSimOptions(input: Partial<SimOptions> = {}): SimOptions {
  const resolved: SimOptions = { ...simOptionDefaults };
  for (const [key, value] of Object.entries(input)) {
    // An explicit `undefined` means "not set", as with the spread of optional fields.
    if (value === undefined) continue;
    if (isStringKey(key)) {
      if (typeof value !== 'string' || value.trim() === '') {
        throw new Error(`sim option ${key}: expected a non-empty string, got ${JSON.stringify(value)}`);
      }
      resolved[key] = value;
    } else if (isNumberKey(key)) {
      if (typeof value !== 'number') {
        throw new Error(
          `sim option ${key}: expected a number, got ${JSON.stringify(value) ?? String(value)}`,
        );
      }
      const problem = numberProblem(value, numberRules[key]);
      if (problem) throw new Error(`sim option ${key}: ${problem}, got ${value}`);
      resolved[key] = value;
    } else {
      throw new Error(`sim option ${key}: unknown option`);
    }
  }
  // Requests are routed to chat or embeddings by model name, so the two names must differ.
  if (resolved.model === resolved.embeddingModel) {
    throw new Error(`sim options model and embeddingModel must differ, both are "${resolved.model}"`);
  }
  return resolved;
}

function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

const flagToKey: ReadonlyMap<string, keyof SimOptions> = new Map(
  (Object.keys(simOptionDefaults) as (keyof SimOptions)[]).map((key) => [`--${kebabCase(key)}`, key]),
);

/** The command-line flags `parseSimArgs` understands, e.g. `--max-num-seqs`. */
export const simFlags: readonly string[] = [...flagToKey.keys()];

/**
 * Parses `--port 8000 --ttft-ms 20 --max-num-seqs 16 …` (also `--flag=value`), one flag per
 * option in kebab-case. Throws an Error naming the flag and the value for an unknown flag, a
 * missing value, a non-numeric value for a numeric option, or a value out of range.
 */
export function parseSimArgs(argv: readonly string[]): Partial<SimOptions> {
  const parsed: Partial<SimOptions> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) {
      throw new Error(`sim: unexpected argument "${arg}"; flags are ${simFlags.join(', ')}`);
    }
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const key = flagToKey.get(flag);
    if (key === undefined) {
      throw new Error(`sim: unknown flag "${flag}"; flags are ${simFlags.join(', ')}`);
    }
    let value: string | undefined;
    if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) {
        throw new Error(`sim: flag ${flag} needs a value`);
      }
      i++;
    }
    if (isStringKey(key)) {
      if (value.trim() === '') throw new Error(`sim: flag ${flag} needs a non-empty value, got "${value}"`);
      parsed[key] = value;
      continue;
    }
    // Number('') and Number(' ') are 0, so blank strings are rejected before converting.
    const numeric = value.trim() === '' ? Number.NaN : Number(value);
    if (Number.isNaN(numeric)) {
      throw new Error(`sim: flag ${flag} expects a number, got "${value}"`);
    }
    const problem = numberProblem(numeric, numberRules[key]);
    if (problem) throw new Error(`sim: flag ${flag}: ${problem}, got "${value}"`);
    parsed[key] = numeric;
  }
  return parsed;
}
