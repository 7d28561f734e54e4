import { describe, expect, it } from 'vitest';
import { SessionIds } from '../services/ingress/index.js';

const ID_FORMAT = /^s1\.[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{32}$/;
/** The principal the ids are minted for (see CallerIdentity.principal). */
const P = 'https://auth.example.com#agent-1';

/** Replaces the character at `index` with a different base64url character. */
function flip(text: string, index: number): string {
  const c = text[index];
  return `${text.slice(0, index)}${c === 'A' ? 'B' : 'A'}${text.slice(index + 1)}`;
}

describe('SessionIds', () => {
  const ids = new SessionIds('cluster-secret');

  it('mints ids of the form s1.<nonce>.<signature>', () => {
    expect(ids.mint(P)).toMatch(ID_FORMAT);
  });

  it('mints unique ids', () => {
    const minted = new Set(Array.from({ length: 5000 }, () => ids.mint(P)));
    expect(minted.size).toBe(5000);
  });

  it('verifies what it minted', () => {
    for (let i = 0; i < 100; i++) expect(ids.verify(ids.mint(P), P)).toBe(true);
  });

  it('verifies ids minted by another replica with the same secret', () => {
    const replicaA = new SessionIds('shared');
    const replicaB = new SessionIds('shared');
    expect(replicaB.verify(replicaA.mint(P), P)).toBe(true);
    expect(replicaA.verify(replicaB.mint(P), P)).toBe(true);
  });

  it('binds an id to the principal that initialized the session', () => {
    const id = ids.mint(P);
    expect(ids.verify(id, P)).toBe(true);
    for (const other of ['https://auth.example.com#agent-2', 'key:0123456789ab', 'anonymous', `${P} `, '']) {
      expect(ids.verify(id, other)).toBe(false);
    }
    // Another replica with the same secret binds it the same way.
    expect(new SessionIds('cluster-secret').verify(id, P)).toBe(true);
    expect(new SessionIds('cluster-secret').verify(id, 'key:0123456789ab')).toBe(false);
  });

  it('rejects ids minted with a different secret', () => {
    const other = new SessionIds('other-secret');
    for (let i = 0; i < 50; i++) {
      expect(ids.verify(other.mint(P), P)).toBe(false);
      expect(other.verify(ids.mint(P), P)).toBe(false);
    }
  });

  it('distinguishes secrets that differ only slightly', () => {
    expect(new SessionIds('secret').verify(new SessionIds('secret ').mint(P), P)).toBe(false);
    expect(new SessionIds('Secret').verify(new SessionIds('secret').mint(P), P)).toBe(false);
  });

  it('works with an empty or unicode secret', () => {
    const empty = new SessionIds('');
    expect(empty.verify(empty.mint(P), P)).toBe(true);
    const unicode = new SessionIds('ключ-🔑');
    expect(unicode.verify(unicode.mint(P), P)).toBe(true);
    expect(empty.verify(unicode.mint(P), P)).toBe(false);
  });

  it('rejects a tampered nonce', () => {
    const [prefix, nonce, signature] = ids.mint(P).split('.') as [string, string, string];
    for (const index of [0, 5, nonce.length - 1]) {
      expect(ids.verify(`${prefix}.${flip(nonce, index)}.${signature}`, P)).toBe(false);
    }
    expect(ids.verify(`${prefix}.${nonce}x.${signature}`, P)).toBe(false);
    expect(ids.verify(`${prefix}.${nonce.slice(1)}.${signature}`, P)).toBe(false);
  });

  it('rejects a tampered signature', () => {
    const [prefix, nonce, signature] = ids.mint(P).split('.') as [string, string, string];
    for (const index of [0, 16, signature.length - 1]) {
      expect(ids.verify(`${prefix}.${nonce}.${flip(signature, index)}`, P)).toBe(false);
    }
    expect(ids.verify(`${prefix}.${nonce}.${signature.slice(0, -1)}`, P)).toBe(false);
    expect(ids.verify(`${prefix}.${nonce}.${signature}A`, P)).toBe(false);
    expect(ids.verify(`${prefix}.${nonce}.${signature.toUpperCase()}`, P)).toBe(
      signature === signature.toUpperCase(),
    );
  });

  it('rejects a swapped signature from another id', () => {
    const a = ids.mint(P).split('.');
    const b = ids.mint(P).split('.');
    expect(ids.verify(`s1.${a[1]}.${b[2]}`, P)).toBe(false);
  });

  it('rejects a changed version prefix', () => {
    const [, nonce, signature] = ids.mint(P).split('.');
    for (const prefix of ['s2', 'S1', '', 's1 ', 'x']) {
      expect(ids.verify(`${prefix}.${nonce}.${signature}`, P)).toBe(false);
    }
  });

  it('rejects a signature with multi-byte characters of the same length', () => {
    const [, nonce, signature] = ids.mint(P).split('.') as [string, string, string];
    expect(ids.verify(`s1.${nonce}.${'é'.repeat(signature.length)}`, P)).toBe(false);
    expect(ids.verify(`s1.${nonce}.${signature.slice(0, -1)}é`, P)).toBe(false);
  });

  it.each([
    '',
    's1',
    's1.',
    's1..',
    's1...',
    '..',
    's1.nonce.',
    's1..signature',
    '.nonce.signature',
    's1.nonce.signature',
    's1.a.b.c',
    'not-a-session-id',
    '\u0000\u0000\u0000',
    '🔑.🔑.🔑',
    '00000000-0000-0000-0000-000000000000',
  ])('rejects malformed %j without throwing', (id) => {
    expect(() => ids.verify(id, P)).not.toThrow();
    expect(ids.verify(id, P)).toBe(false);
  });

  it('rejects very long strings without throwing', () => {
    const valid = ids.mint(P);
    const long = [
      'x'.repeat(1_000_000),
      `s1.${'a'.repeat(1_000_000)}.${'b'.repeat(32)}`,
      `s1.${'a'.repeat(24)}.${'b'.repeat(1_000_000)}`,
      `${valid}${'.'.repeat(100_000)}`,
      `${valid}${'A'.repeat(100_000)}`,
    ];
    for (const id of long) {
      expect(() => ids.verify(id, P)).not.toThrow();
      expect(ids.verify(id, P)).toBe(false);
    }
  });

  it('rejects random junk without throwing', () => {
    let seed = 987_654_321;
    const next = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed;
    };
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.s1 \u00e9\u4e16';
    for (let n = 0; n < 2000; n++) {
      const length = next() % 90;
      let id = n % 2 === 0 ? 's1.' : '';
      for (let i = 0; i < length; i++) id += alphabet[next() % alphabet.length];
      expect(ids.verify(id, P)).toBe(false);
    }
  });
});
