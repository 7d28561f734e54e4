import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, type Stats, unwatchFile, watchFile } from 'node:fs';
import type { AuthInfo } from '@modelcontextprotocol/server';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { z } from 'zod';
import { ClusterError, type Logger } from '../../core/index.js';
import { AuthRefusal, type CallerIdentity, describeProblem, identityExtra } from './identity.js';

/**
 * API keys for service accounts and scripts: `mcpk_<id>_<secret>`, where the 12 hex digits of
 * `id` are public (they name the key in logs, audit lines and the keys file) and the secret is
 * 32 random bytes. The keys file stores only a SHA-256 of the whole key: the secret has 256
 * bits of entropy, so a slow password hash would add nothing but CPU per request.
 */
export const API_KEY_PREFIX = 'mcpk_';
const KEY_FORMAT = /^mcpk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

const entrySchema = z
  .object({
    id: z.string().regex(/^[0-9a-f]{12}$/, 'an id is 12 lowercase hex digits'),
    hash: z.string().regex(/^sha256:[A-Za-z0-9_-]{43}$/, 'a hash is sha256:<43 base64url characters>'),
    tenant: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a tenant is 1-64 of A-Z a-z 0-9 _ . -'),
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/)).default([]),
    /** ISO 8601 time after which the key is refused; absent: valid until removed. */
    expires: z.iso.datetime({ offset: true }).optional(),
    /** What the key is for, for people reading the file. */
    name: z.string().max(200).optional(),
  })
  .strict();

const fileSchema = z.object({ keys: z.array(entrySchema).nullable().default([]) }).strict();

/** One entry of the keys file. */
export type ApiKeyEntry = z.output<typeof entrySchema>;

/** A new key and the entry that admits it; the key is shown once and stored nowhere. */
export interface NewApiKey {
  key: string;
  entry: ApiKeyEntry;
}

/** Mints a key for `tenant` (see {@link API_KEY_PREFIX} for its form). */
export function createApiKey(options: {
  tenant: string;
  scopes?: readonly string[];
  /** When the key stops working; absent: never. */
  expires?: Date;
  name?: string;
}): NewApiKey {
  const id = randomBytes(6).toString('hex');
  const key = `${API_KEY_PREFIX}${id}_${randomBytes(32).toString('base64url')}`;
  const entry = entrySchema.parse({
    id,
    hash: hashOf(key),
    tenant: options.tenant,
    scopes: [...(options.scopes ?? [])],
    ...(options.expires ? { expires: options.expires.toISOString() } : {}),
    ...(options.name ? { name: options.name } : {}),
  });
  return { key, entry };
}

/** The entry as it goes into the keys file's `keys:` list (YAML). */
export function keysFileEntry(entry: ApiKeyEntry): string {
  return stringifyYaml([entry]).trimEnd();
}

function hashOf(key: string): string {
  return `sha256:${createHash('sha256').update(key).digest('base64url')}`;
}

/** Whether a bearer credential is an API key rather than a JWT. */
export function isApiKey(token: string): boolean {
  return token.startsWith(API_KEY_PREFIX);
}

/**
 * Parses the keys file's text; throws a ClusterError INVALID_CONFIG naming the file, the entry
 * and the problem.
 */
export function parseKeysFile(text: string, origin: string): Map<string, ApiKeyEntry> {
  let raw: unknown;
  try {
    raw = text.trim() === '' ? {} : parseYaml(text);
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `${origin}: not valid YAML: ${describeProblem(err)}`);
  }
  const parsed = fileSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new ClusterError('INVALID_CONFIG', `${origin} is invalid:\n${lines.join('\n')}`);
  }
  const byId = new Map<string, ApiKeyEntry>();
  for (const [i, entry] of (parsed.data.keys ?? []).entries()) {
    if (byId.has(entry.id))
      throw new ClusterError('INVALID_CONFIG', `${origin}: keys.${i}.id: key ${entry.id} appears twice`);
    byId.set(entry.id, entry);
  }
  return byId;
}

/**
 * The API keys an ingress accepts, from the keys file. The file is re-read when it changes
 * (checked every `pollIntervalMs`, which follows the symlink swaps of a Kubernetes Secret
 * volume) and on {@link reload} (the ingress calls it on SIGHUP), so adding or revoking a key
 * needs no restart. A file that no longer parses is refused with an error log and the keys
 * read last stay in force: a typo must neither lock every caller out nor let anyone in.
 */
export class ApiKeyStore {
  private keys: Map<string, ApiKeyEntry>;
  private readonly log: Logger;
  private readonly onChange: (current: Stats, previous: Stats) => void;

  /** Reads `file`; throws ClusterError INVALID_CONFIG when it cannot be read or parsed. */
  constructor(
    private readonly file: string,
    options: { pollIntervalMs: number; log: Logger },
  ) {
    this.log = options.log;
    this.keys = this.read();
    this.onChange = (current, previous) => {
      if (
        current.mtimeMs !== previous.mtimeMs ||
        current.ino !== previous.ino ||
        current.size !== previous.size
      )
        this.reload();
    };
    watchFile(file, { interval: options.pollIntervalMs, persistent: false }, this.onChange);
  }

  /** How many keys are in force. */
  get size(): number {
    return this.keys.size;
  }

  /** Re-reads the file; false (keeping the keys in force) when it cannot be read or parsed. */
  reload(): boolean {
    try {
      const keys = this.read();
      this.keys = keys;
      this.log.info('api keys reloaded', { file: this.file, keys: keys.size });
      return true;
    } catch (err) {
      this.log.error('api keys file refused; the keys read before stay in force', {
        file: this.file,
        problem: describeProblem(err),
      });
      return false;
    }
  }

  /**
   * The identity of `key`, as the SDK's bearer helpers take it; throws an OAuthError
   * `invalid_token` for a malformed, unknown (revoked) or expired key.
   */
  verify(key: string, resource: URL | undefined, now = Date.now()): AuthInfo {
    const match = KEY_FORMAT.exec(key);
    if (!match) throw new AuthRefusal('malformed', 'malformed API key');
    const id = match[1] as string;
    const entry = this.keys.get(id);
    // Compared in constant time; an unknown id still costs one comparison so the two take alike.
    const expected = Buffer.from(entry?.hash ?? 'sha256:'.padEnd(50, 'A'));
    const given = Buffer.from(hashOf(key));
    const same = expected.length === given.length && timingSafeEqual(expected, given);
    if (!entry || !same) throw new AuthRefusal('unknown_key', `unknown or revoked API key ${id}`);
    const expiresMs = entry.expires ? Date.parse(entry.expires) : undefined;
    if (expiresMs !== undefined && expiresMs <= now)
      throw new AuthRefusal('expired', `API key ${id} expired at ${entry.expires}`);
    const identity: CallerIdentity = { principal: `key:${id}`, tenant: entry.tenant, scopes: entry.scopes };
    return {
      token: key,
      clientId: `key:${id}`,
      scopes: [...entry.scopes],
      // The SDK's bearer check refuses credentials without an expiry; a key without one is
      // valid until revoked, which the next check of the file decides.
      expiresAt: Math.floor((expiresMs ?? now + 3_600_000) / 1000),
      ...(resource ? { resource } : {}),
      extra: identityExtra(identity),
    };
  }

  /** Stops watching the file. */
  close(): void {
    unwatchFile(this.file, this.onChange);
  }

  private read(): Map<string, ApiKeyEntry> {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `cannot read the API keys file ${this.file} (setting auth.apiKeys.file): ${describeProblem(err)}`,
      );
    }
    return parseKeysFile(text, this.file);
  }
}
