/**
 * Continuous batching as vLLM's engine does it: one loop of decode steps shared by every
 * sequence past its first token. Each step gives every sequence in the batch one token and
 * takes `decodeStepMs(batch size)`; a sequence that arrives during a step joins at the next
 * one, a finished or aborted one leaves at once. The clock is virtual but paced by real time:
 * step k ends at (start of step k) + (its model duration), and a late timer completes every
 * step already due in one go, so the long-run rate matches the model despite timer granularity.
 */

import { decodeStepMs } from './latency-model.js';
import type { SimOptions } from './options.js';

/** A sequence in the decode loop. The engine raises `generated` up to `target`. */
export interface DecodingSequence {
  /** Tokens generated so far, the first (prefill) token included. */
  generated: number;
  /** Tokens to generate in all. */
  readonly target: number;
  /** Called after one or more steps gave this sequence tokens (or finished it). */
  notify(): void;
}

/** What one completed step did, for the backend's counters and histograms. */
export interface DecodeStep {
  /** Sequences that got a token in this step (the batch size). */
  tokens: number;
  /** The step's model duration, in milliseconds. */
  ms: number;
}

/**
 * How far the loop may fall behind its virtual schedule (event loop stalls), in milliseconds;
 * beyond it the schedule restarts from now instead of bursting out the backlog.
 */
const maxLagMs = 50;

export class DecodeEngine {
  readonly #sequences = new Set<DecodingSequence>();
  #timer: NodeJS.Timeout | undefined;
  #batch: DecodingSequence[] = [];
  #stepMs = 0;
  #stepEndsAt = 0;

  constructor(
    readonly options: SimOptions,
    readonly onStep: (step: DecodeStep) => void,
  ) {}

  /** Sequences in the decode loop now. */
  get decoding(): number {
    return this.#sequences.size;
  }

  /** Adds a sequence; it gets its next token at the end of the next step that starts. */
  join(sequence: DecodingSequence): void {
    if (sequence.generated >= sequence.target) return;
    this.#sequences.add(sequence);
    if (this.#timer === undefined) {
      const now = performance.now();
      this.#beginStep(now);
      this.#timer = setTimeout(this.#tick, this.#stepEndsAt - now);
    }
  }

  /** Removes a sequence (finished elsewhere or aborted); a no-op if it is not in the loop. */
  leave(sequence: DecodingSequence): void {
    this.#sequences.delete(sequence);
    if (this.#sequences.size === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Starts a step at virtual time `at` with the sequences decoding now. */
  #beginStep(at: number): void {
    this.#batch = [...this.#sequences];
    this.#stepMs = decodeStepMs(this.options, this.#batch.length);
    this.#stepEndsAt = at + this.#stepMs;
  }

  readonly #tick = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    // Timers run on a millisecond clock and can fire a hair early: a step never ends before its time.
    if (now < this.#stepEndsAt) {
      this.#timer = setTimeout(this.#tick, this.#stepEndsAt - now);
      return;
    }
    const touched = new Set<DecodingSequence>();
    // Completes every step that is due by now, then waits for the next one.
    for (;;) {
      let tokens = 0;
      for (const sequence of this.#batch) {
        // A sequence that left during the step gets nothing.
        if (!this.#sequences.has(sequence)) continue;
        sequence.generated++;
        tokens++;
        touched.add(sequence);
        if (sequence.generated >= sequence.target) this.#sequences.delete(sequence);
      }
      if (tokens > 0) this.onStep({ tokens, ms: this.#stepMs });
      if (this.#sequences.size === 0) break;
      this.#beginStep(now - this.#stepEndsAt > maxLagMs ? now : this.#stepEndsAt);
      if (this.#stepEndsAt > now) {
        this.#timer = setTimeout(this.#tick, this.#stepEndsAt - now);
        break;
      }
    }
    for (const sequence of touched) sequence.notify();
  };
}
