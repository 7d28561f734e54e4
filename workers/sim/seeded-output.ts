/**
 * Deterministic model output: the same input always gives the same words or the same vector,
 * across processes and runs, so tests and caches can compare answers.
 */

import { createHash } from 'node:crypto';

/** A pseudo-random source: `next()` returns a float in [0, 1). */
export interface SeededRandom {
  next(): number;
}

/** A seeded sfc32 generator (small, fast, well distributed) keyed by the SHA-256 of `seedText`. */
export function seededRandom(seedText: string): SeededRandom {
  const digest = createHash('sha256').update(seedText).digest();
  let a = digest.readUInt32LE(0);
  let b = digest.readUInt32LE(4);
  let c = digest.readUInt32LE(8);
  let d = digest.readUInt32LE(12);
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4_294_967_296;
  };
  // The first outputs of sfc32 still echo the seed; discard a few, as its authors recommend.
  for (let i = 0; i < 12; i++) next();
  return { next };
}

const vocabulary: readonly string[] = (
  'the model cluster token request stream queue worker tool agent ' +
  'batch latency cache vector prompt answer replica signal deadline pool ' +
  'and of to a in is for with on that ' +
  'fast simple steady quiet bright careful small large new shared ' +
  'runs sends waits returns scales holds reads writes builds checks'
).split(' ');

/**
 * `count` tokens of pseudo-English: one word per token, the first capitalised and without a
 * leading space, the rest with one, so joining them gives the full text.
 */
export function generateTokens(seedText: string, count: number): string[] {
  const random = seededRandom(seedText);
  const tokens: string[] = [];
  let sentenceStart = true;
  for (let i = 0; i < count; i++) {
    const word = vocabulary[Math.floor(random.next() * vocabulary.length)] ?? 'the';
    let token = sentenceStart ? word.charAt(0).toUpperCase() + word.slice(1) : word;
    sentenceStart = random.next() < 0.1;
    if (sentenceStart) token += '.';
    tokens.push(i === 0 ? token : ` ${token}`);
  }
  return tokens;
}

/** A unit-norm (L2) vector of `dimensions` floats, determined by `text` alone. */
export function embeddingVector(text: string, dimensions: number): number[] {
  const random = seededRandom(`embed\u0000${text}`);
  const vector = new Array<number>(dimensions);
  let sumOfSquares = 0;
  for (let i = 0; i < dimensions; i++) {
    // Box–Muller: normal components give directions spread evenly over the sphere.
    const u = 1 - random.next();
    const v = random.next();
    const x = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    vector[i] = x;
    sumOfSquares += x * x;
  }
  const norm = Math.sqrt(sumOfSquares);
  for (let i = 0; i < dimensions; i++) {
    // A zero vector is practically impossible, but would divide by zero: fall back to an axis.
    vector[i] = norm > 0 ? (vector[i] ?? 0) / norm : i === 0 ? 1 : 0;
  }
  return vector;
}

/**
 * The length a raw (unnormalized) embedding of `text` has, determined by `text` alone: between
 * 2 and 12, never 1, so a client can tell a normalized vector from a raw one.
 */
export function embeddingNorm(text: string): number {
  return 2 + 10 * seededRandom(`norm\u0000${text}`).next();
}
