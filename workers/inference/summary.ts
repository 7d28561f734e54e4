/** How `summarize` bounds a summary's length: the prompt, the token budget and the final trim. */

/** `max_words` when the call gives none (the input schema's default). */
export const DEFAULT_SUMMARY_WORDS = 100;

/**
 * Tokens allowed per word of the summary. English averages about 1.3 BPE tokens per word; 2
 * leaves room for punctuation, numbers, names and other languages, so a model that keeps to
 * the word limit is never cut off mid-sentence by `max_tokens`, while one that rambles is
 * stopped at about twice the length asked for instead of running on.
 */
export const SUMMARY_TOKENS_PER_WORD = 2;

/** Extra tokens on top of the per-word budget, for a short summary's closing punctuation. */
const SUMMARY_EXTRA_TOKENS = 8;

/** Sampling temperature of summaries: low, as a summary should stick to the text. */
export const SUMMARY_TEMPERATURE = 0.2;

/** The system prompt that asks for a summary of at most `maxWords` words. */
export function summaryPrompt(maxWords: number): string {
  const limit = maxWords === 1 ? '1 word' : `${maxWords} words`;
  return (
    `Summarize the user's text in at most ${limit}. ` +
    'Keep its key facts and conclusions, write in the language of the text, ' +
    'and reply with the summary only, without a preamble.'
  );
}

/**
 * `max_tokens` for a summary of at most `maxWords` words: `maxWords × SUMMARY_TOKENS_PER_WORD
 * + 8`, but never more than the tool's own `maxTokens` limit.
 */
export function summaryMaxTokens(maxWords: number, toolMaxTokens: number): number {
  return Math.min(toolMaxTokens, Math.ceil(maxWords * SUMMARY_TOKENS_PER_WORD) + SUMMARY_EXTRA_TOKENS);
}

/**
 * The first `maxWords` words of `text` (words are runs of non-whitespace), with the text's own
 * spacing between them and surrounding whitespace removed. A model that overruns the limit is
 * cut at the limit, without a marker; text within the limit comes back as is (trimmed).
 */
export function trimToWords(text: string, maxWords: number): string {
  let seen = 0;
  for (const match of text.matchAll(/\S+/g)) {
    seen += 1;
    if (seen === maxWords) return text.slice(0, match.index + match[0].length).trim();
  }
  return text.trim();
}
