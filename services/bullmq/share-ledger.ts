import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  BROKER_RECONNECT_GRACE_MS,
  ClusterError,
  encodeShareValue,
  isReplicaId,
  MAX_SHARE_TTL_MS,
  messageOf,
  type ShareLedger,
  withTimeout,
} from '../core/index.js';
import { logEvent } from './log.js';
import { awaitReady, COMMAND_TIMEOUT_MS } from './redis-connection.js';

/**
 * Expiry of the whole hash, renewed by every publish, in milliseconds: the longest TTL plus 10 s,
 * so a namespace whose replicas all stopped leaves nothing behind.
 */
export const SHARES_KEY_TTL_MS = MAX_SHARE_TTL_MS + 10_000;

/** Writes one entry stamped with its expiry on Redis's clock: `<expires at, ms> <value JSON>`. */
const PUBLISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`;

/** Returns the live entries as [field, value JSON, ...] and deletes the dead (and malformed) ones. */
const READ = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sp = string.find(v, ' ', 1, true)
  local expires = sp and tonumber(string.sub(v, 1, sp - 1))
  if expires and expires > now then
    live[#live + 1] = all[i]
    live[#live + 1] = string.sub(v, sp + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
`;

/**
 * A ledger of the {@link ShareLedger} contract on Redis: one hash `<namespace>:<ledger>` (the broker
 * opens two: `shares`, the ingress replicas' admission figures, and `roles`, workers' and the
 * autoscaler's status), field = replica id (any string: fields are binary-safe), value =
 * `<expires at> <value JSON>`, on the broker's producer connection (no connection of its own).
 *
 * Why one hash and scripts rather than a key per replica with `PX` and a set as index: a read is one
 * round trip either way, but the hash needs no index to keep in step with keys that expire on their
 * own, and both scripts stamp and compare expiries on Redis's own clock (`TIME`), so replicas'
 * clocks never meet. A publish is `HSET` + `PEXPIRE` of the hash; a read is `HGETALL` filtered in
 * the script, which deletes dead entries as it goes (`HDEL`). Per-field TTLs (`HPEXPIRE`) would do
 * this in Redis itself but need Redis 7.4. The scripts run by `EVALSHA`, falling back to `EVAL`
 * once when Redis has not cached them (after a restart).
 *
 * Bounded like an enqueue: a command waits up to BROKER_RECONNECT_GRACE_MS (3 s) for a lost
 * connection, tried again if it drops under a try (the producer has no offline queue, so nothing is
 * sent late), and gets COMMAND_TIMEOUT_MS (5 s) a try; failures reject with QUEUE_UNAVAILABLE.
 */
export class RedisShareLedger implements ShareLedger {
  private readonly key: string;

  /** @param ledger the ledger's name, the hash key's suffix: `shares` or `roles`. */
  constructor(
    private readonly url: string,
    namespace: string,
    private readonly client: Redis,
    ledger: 'shares' | 'roles' = 'shares',
  ) {
    this.key = `${namespace}:${ledger}`;
  }

  async publish(replica: string, value: unknown, ttlMs: number): Promise<void> {
    const json = encodeShareValue(replica, value, ttlMs);
    await this.run('publish', replica, () =>
      this.script(PUBLISH, [replica, String(ttlMs), json, String(SHARES_KEY_TTL_MS)]),
    );
  }

  async read(): Promise<Map<string, unknown>> {
    const flat = await this.run('read', 'all replicas', () => this.script(READ, []));
    const live = new Map<string, unknown>();
    if (!Array.isArray(flat)) return live;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const replica = String(flat[i]);
      try {
        live.set(replica, JSON.parse(String(flat[i + 1])));
      } catch (err) {
        logEvent(
          'warn',
          'share_entry_undecodable',
          { url: this.url, key: this.key, replica, error: messageOf(err) },
          this.key,
        );
      }
    }
    return live;
  }

  async withdraw(replica: string): Promise<void> {
    if (!isReplicaId(replica)) return; // never published
    try {
      if (this.client.status !== 'ready') return;
      await withTimeout(this.client.hdel(this.key, replica), COMMAND_TIMEOUT_MS);
    } catch (err) {
      logEvent('warn', 'share_withdraw_failed', {
        url: this.url,
        key: this.key,
        replica,
        error: messageOf(err),
      });
    }
  }

  /** Nothing of its own: the producer connection belongs to the broker. */
  async close(): Promise<void> {}

  /**
   * Runs `op` once the connection is up, like an enqueue: waits up to BROKER_RECONNECT_GRACE_MS
   * (from the first try) for it, and tries again when it dropped under a try (both scripts are
   * idempotent), so a short blip delays an operation instead of failing it.
   */
  private async run<T>(what: string, replica: string, op: () => Promise<T>): Promise<T> {
    const until = Date.now() + BROKER_RECONNECT_GRACE_MS;
    for (;;) {
      if (!(await awaitReady(this.client, Math.max(0, until - Date.now())))) {
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `ledger ${this.key} ${what} (${replica}): Redis at ${this.url} is unreachable (no connection for ${BROKER_RECONNECT_GRACE_MS} ms, ${this.client.status})`,
        );
      }
      try {
        return await withTimeout(op(), COMMAND_TIMEOUT_MS);
      } catch (err) {
        if (this.client.status !== 'ready' && Date.now() < until) continue;
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `ledger ${this.key} ${what} (${replica}) on Redis at ${this.url} failed: ${messageOf(err)}`,
          { cause: err },
        );
      }
    }
  }

  private async script(source: string, args: string[]): Promise<unknown> {
    const sha = sha1Of(source);
    try {
      return await this.client.evalsha(sha, 1, this.key, ...args);
    } catch (err) {
      if (!messageOf(err).startsWith('NOSCRIPT')) throw err;
      return this.client.eval(source, 1, this.key, ...args);
    }
  }
}

const shas = new Map<string, string>();

function sha1Of(source: string): string {
  let sha = shas.get(source);
  if (!sha) {
    sha = createHash('sha1').update(source).digest('hex');
    shas.set(source, sha);
  }
  return sha;
}
