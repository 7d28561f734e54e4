import { randomBytes } from 'node:crypto';
import { ResourceNotFoundError } from '@modelcontextprotocol/server';
import type { JobStore, Logger } from '../core/index.js';
import { identityOf } from './auth/index.js';
import type { ResourceSource } from './file-resources.js';

/** URI prefix of linked result media. */
export const RESULT_URI_PREFIX = 'mcp-cluster://results/';
/** Job store key prefix of linked media records (the bytes are blobs `result.<id>.data`). */
const RECORD_PREFIX = 'result.';
/** How often a replica deletes linked media past their time, in ms. */
const SWEEP_INTERVAL_MS = 60_000;

/** What the job store keeps beside a linked item's bytes. */
interface LinkRecord {
  tenant: string;
  mimeType: string;
  bytes: number;
  /** Unix milliseconds after which the item reads as not found and the sweep deletes it. */
  expiresAt: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Large media in tool results as resource links: an image or audio item of at least `minBytes`
 * is kept in the job store on the broker for `ttlMs` and the result carries a `resource_link`
 * (`mcp-cluster://results/<id>`) in its place, which any replica answers with `resources/read`
 * (the bytes as a base64 `blob`) for the caller's tenant. Callers that fetch an image only when
 * they need it, or hand the link on, keep multi-megabyte base64 out of their context and off the
 * call's stream. Every replica sweeps expired items once a minute.
 */
export class ResultLinks {
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: JobStore,
    /** Smallest item linked instead of inlined, in bytes (at least 1). */
    readonly minBytes: number,
    /** How long a linked item stays readable, in ms. */
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {}

  /**
   * The result JSON with each image or audio item of at least `minBytes` stored and replaced by a
   * `resource_link` naming it; the text as it is when it holds none (a result shorter than
   * `minBytes` cannot, and is not parsed). When the store fails the items stay inline: the caller
   * still gets its answer.
   */
  async linkLarge(json: string, tenant: string, tool: string): Promise<string> {
    // Base64 is longer than the bytes it holds: a shorter result holds no item this large.
    if (json.length < this.minBytes) return json;
    const result = JSON.parse(json) as { content?: unknown };
    if (!Array.isArray(result.content)) return json;
    let linked = 0;
    const content: unknown[] = [];
    try {
      for (const [i, item] of result.content.entries()) {
        const media = item as { type?: unknown; data?: unknown; mimeType?: unknown };
        const large =
          (media.type === 'image' || media.type === 'audio') &&
          typeof media.data === 'string' &&
          media.data.length >= this.minBytes;
        if (!large) {
          content.push(item);
          continue;
        }
        const bytes = Buffer.from(media.data as string, 'base64');
        if (bytes.length < this.minBytes) {
          content.push(item);
          continue;
        }
        const mimeType = typeof media.mimeType === 'string' ? media.mimeType : 'application/octet-stream';
        const id = randomBytes(18).toString('base64url');
        await this.store.putBlob(`result.${id}.data`, bytes);
        const record: LinkRecord = {
          tenant,
          mimeType,
          bytes: bytes.length,
          expiresAt: Date.now() + this.ttlMs,
        };
        await this.store.create(`${RECORD_PREFIX}${id}`, encoder.encode(JSON.stringify(record)));
        content.push({
          type: 'resource_link',
          uri: `${RESULT_URI_PREFIX}${id}`,
          name: `${tool}-${i}`,
          description: `${media.type} of ${bytes.length} bytes from ${tool}, readable with resources/read for ${Math.round(this.ttlMs / 60_000)} min`,
          mimeType,
          size: bytes.length,
        });
        linked += 1;
      }
    } catch (err) {
      this.log.warn('could not store large result media; answering them inline', { err, tool });
      return json;
    }
    return linked === 0 ? json : JSON.stringify({ ...result, content });
  }

  /** The `resources/read` side: `mcp-cluster://results/{id}`, the caller's tenant only. */
  readonly source: ResourceSource = {
    template: {
      uriTemplate: `${RESULT_URI_PREFIX}{id}`,
      name: 'result-media',
      description: 'An image or audio item of a tool result, linked instead of inlined',
    },
    owns: (uri) => uri.startsWith(RESULT_URI_PREFIX),
    read: async (uri, ctx) => {
      const notFound = new ResourceNotFoundError(
        uri,
        `no result media "${uri}" for this caller's tenant (or it expired)`,
      );
      const id = uri.slice(RESULT_URI_PREFIX.length);
      if (!/^[A-Za-z0-9_-]{24}$/.test(id)) throw notFound;
      const stored = await this.store.get(`${RECORD_PREFIX}${id}`);
      if (!stored) throw notFound;
      const record = JSON.parse(decoder.decode(stored.value)) as LinkRecord;
      if (record.tenant !== identityOf(ctx.http?.authInfo).tenant || record.expiresAt < Date.now())
        throw notFound;
      const bytes = await this.store.getBlob(`result.${id}.data`);
      if (!bytes) throw notFound;
      return { uri, mimeType: record.mimeType, blob: Buffer.from(bytes).toString('base64') };
    },
  };

  /** Starts deleting expired items every minute (unref'd); `stop` ends it. */
  start(): void {
    this.sweeper ??= setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Deletes the items past their time; each replica may run it, deletes are idempotent. */
  async sweep(now = Date.now()): Promise<number> {
    let deleted = 0;
    try {
      for (const key of await this.store.keys(RECORD_PREFIX)) {
        const stored = await this.store.get(key);
        if (!stored) continue;
        const record = JSON.parse(decoder.decode(stored.value)) as LinkRecord;
        if (record.expiresAt >= now) continue;
        await this.store.deleteBlob(`result.${key.slice(RECORD_PREFIX.length)}.data`);
        await this.store.delete(key);
        deleted += 1;
      }
    } catch (err) {
      this.log.warn('result media sweep failed; retrying at the next one', { err });
    }
    return deleted;
  }
}
