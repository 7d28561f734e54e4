/**
 * The simulated prefix cache of one backend: an LRU of sessions (the OpenAI `user` field of a
 * chat request, which mcp-cluster fills with the call's session key), each holding the
 * conversation its latest request left in the KV cache (prompt messages plus the completion as
 * an assistant message), bounded in total by a capacity in tokens.
 *
 * A new prompt of the session hits the cache for the tokens of its longest common prefix with
 * that conversation: every leading message equal in role and content counts whole, the first
 * differing message of the same role counts its common leading characters (4 per token), and
 * nothing after it. So a multi-turn conversation that resends the history plus a new turn hits
 * all of the history, while an unrelated prompt under the same session hits nothing — a
 * content check a session-only model would miss. Like vLLM, at least the last prompt token is
 * always computed, so a hit never covers the whole prompt.
 */

import { estimateTokens } from './latency-model.js';

/** One message of a conversation, reduced to what the cache compares. */
export interface CachedMessage {
  readonly role: string;
  readonly content: string;
}

interface Entry {
  messages: readonly CachedMessage[];
  tokens: number;
}

/** Tokens of the whole message list, as the chat endpoint counts prompt tokens. */
export function conversationTokens(messages: readonly CachedMessage[]): number {
  return messages.reduce((sum, m) => sum + estimateTokens(m.content), 0);
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Tokens of the longest common prefix of a cached conversation and a prompt. */
export function sharedPrefixTokens(
  cached: readonly CachedMessage[],
  prompt: readonly CachedMessage[],
): number {
  let tokens = 0;
  const n = Math.min(cached.length, prompt.length);
  for (let i = 0; i < n; i++) {
    const a = cached[i];
    const b = prompt[i];
    if (a === undefined || b === undefined || a.role !== b.role) break;
    if (a.content === b.content) {
      tokens += estimateTokens(a.content);
      continue;
    }
    // Only whole tokens of the shared part of a message count.
    tokens += Math.floor(commonPrefixLength(a.content, b.content) / 4);
    break;
  }
  return tokens;
}

export class PrefixCache {
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  readonly #entries = new Map<string, Entry>();
  #tokens = 0;

  constructor(readonly capacityTokens: number) {}

  /** Tokens held now, over all sessions. */
  get usedTokens(): number {
    return this.#tokens;
  }

  /** Sessions held now. */
  get sessions(): number {
    return this.#entries.size;
  }

  /**
   * Tokens of `prompt` (of `promptTokens` tokens) already cached for `session`, at most
   * `promptTokens − 1`; 0 without a session or an entry. A hit marks the session recently used.
   */
  lookup(session: string | undefined, prompt: readonly CachedMessage[], promptTokens: number): number {
    if (session === undefined) return 0;
    const entry = this.#entries.get(session);
    if (entry === undefined) return 0;
    this.#entries.delete(session);
    this.#entries.set(session, entry);
    return Math.max(0, Math.min(sharedPrefixTokens(entry.messages, prompt), promptTokens - 1));
  }

  /**
   * Makes `conversation` the session's cached conversation (most recently used), cut to the
   * capacity, and evicts least recently used sessions until the total fits.
   */
  store(session: string | undefined, conversation: readonly CachedMessage[]): void {
    if (session === undefined || this.capacityTokens <= 0) return;
    const kept: CachedMessage[] = [];
    let tokens = 0;
    for (const message of conversation) {
      const size = estimateTokens(message.content);
      if (tokens + size <= this.capacityTokens) {
        kept.push(message);
        tokens += size;
        continue;
      }
      const room = this.capacityTokens - tokens;
      if (room > 0) {
        kept.push({ role: message.role, content: message.content.slice(0, room * 4) });
        tokens += room;
      }
      break;
    }
    const previous = this.#entries.get(session);
    if (previous !== undefined) {
      this.#tokens -= previous.tokens;
      this.#entries.delete(session);
    }
    this.#entries.set(session, { messages: kept, tokens });
    this.#tokens += tokens;
    for (const [key, entry] of this.#entries) {
      if (this.#tokens <= this.capacityTokens || key === session) break;
      this.#entries.delete(key);
      this.#tokens -= entry.tokens;
    }
  }
}
