import { ClusterError } from '../core/index.js';
import type { JobFormat, JobItem } from './types.js';

/** Limits on one job's input (config `batch`). */
export interface InputLimits {
  /** Most lines. */
  maxLines: number;
  /** Largest input, in bytes. */
  maxBytes: number;
  /** Checks one text against the tool's own limits; a problem a person can act on, or undefined. */
  checkText: (text: string) => string | undefined;
}

/** A validated input: its items in input order, and the line format they came in. */
export interface ParsedInput {
  items: JobItem[];
  format: JobFormat;
}

/** Problems named per line, at most this many (the rest are counted). */
const MAX_REPORTED = 20;

/**
 * Reads a JSONL input in either line format and checks every line before anything is queued:
 * - OpenAI Batch: `{"custom_id": "...", "method": "POST", "url": "/v1/embeddings", "body": {"input": "...", "model": "..."}}`
 * - plain: `{"id": "...", "text": "..."}`
 * One text per line; every line in the format of the first; ids unique; blank lines ignored.
 * Throws ClusterError INVALID_ARGUMENTS listing the first offending lines by number (1-based)
 * with what is wrong, and how many more there are.
 */
export function parseJsonl(input: string | Uint8Array, limits: InputLimits): ParsedInput {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
  if (size > limits.maxBytes) {
    throw new ClusterError(
      'INVALID_ARGUMENTS',
      `the input is ${size} bytes, above the limit of ${limits.maxBytes} (setting batch.maxInputSize); split it into several jobs`,
    );
  }
  const text =
    typeof input === 'string'
      ? input
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('utf8');
  const items: JobItem[] = [];
  const problems: string[] = [];
  let more = 0;
  const problem = (line: number, message: string) => {
    if (problems.length < MAX_REPORTED) problems.push(`line ${line}: ${message}`);
    else more++;
  };
  const seen = new Set<string>();
  let format: JobFormat | undefined;
  let lineNumber = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNumber++;
    const line = text.slice(start, end).trim();
    start = end + 1;
    if (line === '') {
      if (end === text.length) break;
      continue;
    }
    if (items.length + problems.length + more >= limits.maxLines) {
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        `the input has more than ${limits.maxLines} lines (setting batch.maxLines); split it into several jobs`,
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      problem(lineNumber, `not JSON (${(err as Error).message})`);
      continue;
    }
    const read = readLine(value);
    if (typeof read === 'string') {
      problem(lineNumber, read);
      continue;
    }
    format ??= read.format;
    if (read.format !== format) {
      problem(
        lineNumber,
        `a ${read.format} line in a ${format} file: every line must have the format of the first`,
      );
      continue;
    }
    if (seen.has(read.item.id)) {
      problem(lineNumber, `id "${read.item.id.slice(0, 80)}" appears twice; ids must be unique`);
      continue;
    }
    const bad = limits.checkText(read.item.text);
    if (bad) {
      problem(lineNumber, bad);
      continue;
    }
    seen.add(read.item.id);
    items.push(read.item);
  }
  if (problems.length > 0) {
    throw new ClusterError(
      'INVALID_ARGUMENTS',
      `the input has ${problems.length + more} bad line${problems.length + more === 1 ? '' : 's'}; nothing was queued:\n${problems.join('\n')}${more > 0 ? `\n... and ${more} more` : ''}`,
    );
  }
  if (items.length === 0)
    throw new ClusterError('INVALID_ARGUMENTS', 'the input has no lines; give one JSON object per line');
  return { items, format: format ?? 'plain' };
}

/** Checks inline items (the MCP tool's small jobs) as `parseJsonl` checks lines; numbers them from 1. */
export function checkItems(items: JobItem[], limits: InputLimits): ParsedInput {
  if (items.length === 0) throw new ClusterError('INVALID_ARGUMENTS', 'give at least one text');
  if (items.length > limits.maxLines) {
    throw new ClusterError(
      'INVALID_ARGUMENTS',
      `${items.length} texts is above the limit of ${limits.maxLines} (setting batch.maxLines)`,
    );
  }
  const jsonl = items.map((item) => JSON.stringify({ id: item.id, text: item.text })).join('\n');
  return parseJsonl(jsonl, limits);
}

function readLine(value: unknown): { format: JobFormat; item: JobItem } | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const line = value as Record<string, unknown>;
  if ('custom_id' in line || 'body' in line) {
    const { custom_id: id, method, url, body } = line;
    if (typeof id !== 'string' || id === '') return 'custom_id must be a non-empty string';
    if (id.length > 512) return 'custom_id is longer than 512 characters';
    if (method !== undefined && method !== 'POST')
      return `method must be "POST", got ${JSON.stringify(method)}`;
    if (url !== undefined && url !== '/v1/embeddings')
      return `url must be "/v1/embeddings" (this cluster batches embeddings only), got ${JSON.stringify(url)}`;
    if (typeof body !== 'object' || body === null) return 'body must be an object with "input"';
    const input = (body as { input?: unknown }).input;
    if (Array.isArray(input)) return 'body.input must be one string per line, not an array';
    if (typeof input !== 'string') return 'body.input must be a string';
    return { format: 'openai', item: { id, text: input } };
  }
  const { id, text } = line;
  if (typeof id !== 'string' || id === '')
    return 'id must be a non-empty string (plain lines are {"id": ..., "text": ...})';
  if (id.length > 512) return 'id is longer than 512 characters';
  if (typeof text !== 'string') return 'text must be a string';
  return { format: 'plain', item: { id, text } };
}
