import { describe, expect, it } from 'vitest';
import {
  AFFINITY_LOAD_FACTOR,
  type BackendView,
  pickBackend,
  rendezvousOrder,
} from '../workers/runtime/index.js';

function backend(id: string, inFlight = 0, maxConcurrency = 16, available = true): BackendView {
  return { id, inFlight, maxConcurrency, available };
}

/** Four idle backends of equal size. */
function pool(size = 4, maxConcurrency = 100): BackendView[] {
  return Array.from({ length: size }, (_, i) => backend(`http://gpu-${i}:8000`, 0, maxConcurrency));
}

const indexOf = (backends: readonly BackendView[], id: string | undefined) =>
  backends.findIndex((b) => b.id === id);

describe('pickBackend without a session key', () => {
  it('picks the least loaded backend relative to its maxConcurrency', () => {
    const backends = [backend('a', 4, 8), backend('b', 3, 4), backend('c', 2, 16), backend('d', 1, 2)];
    // loads: a 0.5, b 0.75, c 0.125, d 0.5 — c has the most absolute work left too, but the ratio decides.
    expect(pickBackend(backends, '')).toBe(2);
  });

  it('prefers the larger backend when absolute in-flight counts are equal', () => {
    expect(pickBackend([backend('small', 4, 8), backend('big', 4, 64)], '')).toBe(1);
  });

  it('prefers the relatively idle backend even with more calls in flight', () => {
    expect(pickBackend([backend('small', 2, 4), backend('big', 10, 64)], '')).toBe(1);
  });

  it('picks the first of equally loaded backends', () => {
    expect(pickBackend([backend('a', 1), backend('b', 1), backend('c', 1)], '')).toBe(0);
  });

  it('never picks an unavailable backend, however idle', () => {
    const backends = [backend('down', 0, 16, false), backend('busy', 10, 16)];
    expect(pickBackend(backends, '')).toBe(1);
  });

  it('never picks a full backend', () => {
    const backends = [backend('full', 4, 4), backend('busy', 15, 16)];
    expect(pickBackend(backends, '')).toBe(1);
  });

  it('never picks an over-full backend', () => {
    expect(pickBackend([backend('over', 9, 4), backend('ok', 3, 4)], '')).toBe(1);
  });

  it('returns undefined when no backend qualifies', () => {
    expect(pickBackend([], '')).toBeUndefined();
    expect(pickBackend([backend('a', 0, 4, false), backend('b', 0, 4, false)], '')).toBeUndefined();
    expect(pickBackend([backend('a', 4, 4), backend('b', 16, 16)], '')).toBeUndefined();
    expect(pickBackend([backend('a', 4, 4), backend('b', 0, 4, false)], '')).toBeUndefined();
  });
});

describe('pickBackend with a session key', () => {
  it('returns undefined when no backend qualifies', () => {
    expect(pickBackend([], 'k')).toBeUndefined();
    expect(pickBackend([backend('a', 0, 4, false)], 'k')).toBeUndefined();
    expect(pickBackend([backend('a', 4, 4), backend('b', 2, 2)], 'k')).toBeUndefined();
  });

  it('picks the first backend of the key’s rendezvous order on an idle pool', () => {
    const backends = pool();
    for (const key of ['conv-1', 'conv-2', 'user:42', 'Ω']) {
      const preferred = rendezvousOrder(
        backends.map((b) => b.id),
        key,
      )[0];
      expect(pickBackend(backends, key)).toBe(indexOf(backends, preferred));
    }
  });

  it('keeps picking the same backend while it is healthy and within bound', () => {
    const backends = pool(4, 100);
    const key = 'conversation-7';
    const first = pickBackend(backends, key);
    expect(first).toBeDefined();
    // Turns of one conversation, with the rest of the pool getting busier and quieter around it.
    for (let turn = 0; turn < 50; turn++) {
      backends.forEach((b, i) => {
        b.inFlight = i === first ? turn % 3 : (turn * 7 + i) % 6;
      });
      expect(pickBackend(backends, key)).toBe(first);
    }
  });

  it('keeps the key on its backend even when that one is not the least loaded, within the bound', () => {
    const backends = pool(4, 100);
    const key = 'sticky';
    const preferred = pickBackend(backends, key) ?? -1;
    backends.forEach((b, i) => {
      b.inFlight = i === preferred ? 4 : 3;
    });
    // total 13: bound = ceil(14 / 4 * 1.25) = 5, and 4 + 1 <= 5.
    expect(Math.ceil(((13 + 1) / 4 / 1) * AFFINITY_LOAD_FACTOR)).toBe(5);
    expect(pickBackend(backends, key)).toBe(preferred);
    expect(pickBackend(backends, '')).not.toBe(preferred);
  });

  it('moves the key while its backend is unavailable and brings it back on recovery', () => {
    const backends = pool(4, 100);
    const key = 'conversation-9';
    const order = rendezvousOrder(
      backends.map((b) => b.id),
      key,
    );
    const home = indexOf(backends, order[0]);
    const second = indexOf(backends, order[1]);
    expect(pickBackend(backends, key)).toBe(home);

    const homeBackend = backends[home];
    if (!homeBackend) throw new Error('no home backend');
    homeBackend.available = false;
    const away = pickBackend(backends, key);
    expect(away).toBe(second);
    // The move is stable too: the key keeps going to the same substitute.
    for (let i = 0; i < 10; i++) expect(pickBackend(backends, key)).toBe(second);

    homeBackend.available = true;
    expect(pickBackend(backends, key)).toBe(home);
  });

  it('moves the key when its backend is full', () => {
    const backends = pool(4, 8);
    const key = 'full-home';
    const order = rendezvousOrder(
      backends.map((b) => b.id),
      key,
    );
    const home = indexOf(backends, order[0]);
    const homeBackend = backends[home];
    if (!homeBackend) throw new Error('no home backend');
    homeBackend.inFlight = 8;
    // Other backends loaded too, so the bound does not bite: only fullness moves the key.
    for (const b of backends) if (b !== homeBackend) b.inFlight = 7;
    expect(pickBackend(backends, key)).toBe(indexOf(backends, order[1]));
  });

  it('spills to the key’s next backend when the preferred one exceeds the load bound', () => {
    const backends = pool(4, 100);
    const key = 'hot-conversation';
    const order = rendezvousOrder(
      backends.map((b) => b.id),
      key,
    );
    const home = indexOf(backends, order[0]);
    const homeBackend = backends[home];
    if (!homeBackend) throw new Error('no home backend');
    homeBackend.inFlight = 10;
    // total 10: bound = ceil(11 / 4 * 1.25) = 4; 10 + 1 > 4 although 10 < maxConcurrency 100.
    expect(pickBackend(backends, key)).toBe(indexOf(backends, order[1]));

    // Once the rest of the pool catches up, the key returns home.
    for (const b of backends) if (b !== homeBackend) b.inFlight = 10;
    expect(pickBackend(backends, key)).toBe(home);
  });

  it('skips every over-bound backend in the key’s order', () => {
    const backends = pool(4, 100);
    const key = 'double-spill';
    const order = rendezvousOrder(
      backends.map((b) => b.id),
      key,
    );
    const byOrder = order.map((id) => backends[indexOf(backends, id)] as BackendView);
    byOrder[0] = { ...byOrder[0], inFlight: 20 } as BackendView;
    byOrder[1] = { ...byOrder[1], inFlight: 20 } as BackendView;
    // Rebuild in the original index order.
    const loaded = backends.map((b) => byOrder.find((x) => x.id === b.id) as BackendView);
    // total 40: bound = ceil(41 / 4 * 1.25) = 13.
    expect(pickBackend(loaded, key)).toBe(indexOf(loaded, order[2]));
  });

  it('falls back to the least loaded open backend when none is within the bound', () => {
    // a is full; b is far above the average the bound allows, but it is the only open one.
    const backends = [backend('a', 10, 10), backend('b', 50, 100)];
    expect(pickBackend(backends, 'any-key')).toBe(1);
  });

  it('counts only available backends in the bound', () => {
    // With the down backend's calls counted, b would be within the bound; without, it is over it.
    const backends = [backend('down', 90, 100, false), backend('b', 6, 100), backend('c', 0, 100)];
    const key = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'].find(
      (k) => rendezvousOrder(['b', 'c'], k)[0] === 'b',
    );
    expect(key).toBeDefined();
    // available total 6: bound = ceil(7 / 2 * 1.25) = 5; 6 + 1 > 5, so c.
    expect(pickBackend(backends, key ?? '')).toBe(2);
  });

  it('spreads session keys across backends', () => {
    const backends = pool(4, 1000);
    const counts = new Map<number, number>();
    for (let k = 0; k < 1000; k++) {
      const picked = pickBackend(backends, `session-${k}`);
      expect(picked).toBeDefined();
      counts.set(picked ?? -1, (counts.get(picked ?? -1) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([0, 1, 2, 3]);
    for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(150);
  });
});

describe('rendezvousOrder', () => {
  const ids = ['http://a:1', 'http://b:1', 'http://c:1', 'http://d:1', 'http://e:1'];

  it('is a permutation of the ids', () => {
    expect(rendezvousOrder(ids, 'key').sort()).toEqual([...ids].sort());
  });

  it('does not modify its input', () => {
    const input = [...ids];
    rendezvousOrder(input, 'key');
    expect(input).toEqual(ids);
  });

  it('is deterministic and independent of the input order', () => {
    const order = rendezvousOrder(ids, 'conversation');
    expect(rendezvousOrder(ids, 'conversation')).toEqual(order);
    expect(rendezvousOrder([...ids].reverse(), 'conversation')).toEqual(order);
  });

  it('keeps the relative order of the others when one id leaves (minimal disruption)', () => {
    for (let k = 0; k < 50; k++) {
      const key = `k${k}`;
      const full = rendezvousOrder(ids, key);
      for (const gone of ids) {
        expect(
          rendezvousOrder(
            ids.filter((id) => id !== gone),
            key,
          ),
        ).toEqual(full.filter((id) => id !== gone));
      }
    }
  });

  it('orders differently for different keys', () => {
    const firsts = new Set(Array.from({ length: 100 }, (_, k) => rendezvousOrder(ids, `key-${k}`)[0]));
    expect(firsts.size).toBe(ids.length);
  });

  it('handles no ids and one id', () => {
    expect(rendezvousOrder([], 'k')).toEqual([]);
    expect(rendezvousOrder(['only'], 'k')).toEqual(['only']);
  });
});
