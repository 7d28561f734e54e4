// Char codes the scan compares against (a JSON text's structure is all ASCII).
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \
const OPEN_ARRAY = 0x5b; // [
const CLOSE_ARRAY = 0x5d; // ]
const OPEN_OBJECT = 0x7b; // {
const CLOSE_OBJECT = 0x7d; // }

/**
 * Whether the JSON text `text` nests arrays and objects more than `maxDepth` levels deep: the
 * outermost value is level 1, so a JSON-RPC message is level 1, its `params` level 2 and a
 * `tools/call`'s `arguments` level 3 (one more inside a batch).
 *
 * The ingress runs it on the raw request body before anything else sees it: V8's JSON.parse is
 * iterative, but much of what runs on a parsed message recurses (ajv validation of arguments,
 * JSON.stringify when they are queued, the SDK's handling of other methods), and a body of a few
 * kilobytes of brackets overflows the stack there (JSON.stringify gives up some 4,000 levels down,
 * ajv with a recursive schema sooner).
 *
 * One pass over the text, stopping at the first level past `maxDepth`; brackets inside strings do
 * not count. At an opening quote it jumps to the next quote (`indexOf`, which V8 runs several
 * times faster than a `charCodeAt` loop over a long string) and counts the backslashes right
 * before it: an odd run escapes the quote (`\"`), an even one is escaped backslashes (`\\"`) and
 * the string ends there. Each character is looked at a bounded number of times, so the cost is
 * linear in the length and below JSON.parse's on the same text (a megabyte of prose in about a
 * millisecond).
 * Malformed text is not this function's concern (JSON.parse reports it afterwards): an
 * unterminated string ends the scan, and unbalanced closing brackets only lower the count, so
 * they cannot hide the depth of well-formed JSON.
 */
export function nestsDeeperThan(text: string, maxDepth: number): boolean {
  const length = text.length;
  let depth = 0;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i === -1) return false;
        let before = i - 1;
        while (text.charCodeAt(before) === BACKSLASH) before--;
        if ((i - 1 - before) % 2 === 0) break;
      }
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > maxDepth) return true;
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) {
      depth--;
    }
  }
  return false;
}
