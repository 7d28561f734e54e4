import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ClusterError,
  Lifecycle,
  type LifecycleState,
  type RoleServer,
  startRoleServer,
} from '../services/core/index.js';

describe('Lifecycle', () => {
  it('moves starting → running → draining → drained → stopped, telling onChange of each move', async () => {
    const moves: [LifecycleState | undefined, LifecycleState][] = [];
    const life = new Lifecycle((from, to) => moves.push([from, to]));
    expect(life.state).toBe('starting');
    expect(life.running).toBe(false);
    life.started();
    expect(life.running).toBe(true);
    const seen: LifecycleState[] = [];
    await life.shutdown({
      drain: async () => {
        seen.push(life.state);
      },
      close: async () => {
        seen.push(life.state);
      },
    });
    expect(seen).toEqual(['draining', 'drained']);
    expect(life.state).toBe('stopped');
    expect(moves).toEqual([
      [undefined, 'starting'],
      ['starting', 'running'],
      ['running', 'draining'],
      ['draining', 'drained'],
      ['drained', 'stopped'],
    ]);
  });

  it('runs the shutdown steps once; a second shutdown waits for the first to finish', async () => {
    const life = new Lifecycle();
    life.started();
    let drains = 0;
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const steps = {
      drain: async () => {
        drains++;
        await held;
      },
      close: async () => undefined,
    };
    const first = life.shutdown(steps);
    const second = life.shutdown(steps);
    expect(second).toBe(first);
    expect(life.state).toBe('draining');
    release();
    await second;
    expect(life.state).toBe('stopped');
    await life.shutdown(steps);
    expect(drains).toBe(1);
  });

  it('closes and ends stopped when the drain fails, rethrowing the failure', async () => {
    const life = new Lifecycle();
    life.started();
    let closed = false;
    const failure = new Error('drain failed');
    await expect(
      life.shutdown({
        drain: async () => {
          throw failure;
        },
        close: async () => {
          closed = true;
        },
      }),
    ).rejects.toBe(failure);
    expect(closed).toBe(true);
    expect(life.state).toBe('stopped');
  });

  it('does not go back to running once a shutdown began', async () => {
    const life = new Lifecycle();
    await life.shutdown({ drain: async () => undefined, close: async () => undefined });
    life.started();
    expect(life.state).toBe('stopped');
  });
});

describe('the role server (/healthz, /readyz, /metrics)', () => {
  let server: RoleServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  const get = async (path: string) => {
    const res = await fetch(`${server?.url}${path}`, { signal: AbortSignal.timeout(10_000) });
    const type = res.headers.get('content-type') ?? '';
    return { status: res.status, type, body: type.includes('json') ? await res.json() : await res.text() };
  };

  it('answers ready only while running and the role says ready, with the role details in the body', async () => {
    const life = new Lifecycle();
    let brokerUp = true;
    let refreshes = 0;
    server = await startRoleServer({
      host: '127.0.0.1',
      port: 0,
      portSetting: '--port or test.port',
      lifecycle: life,
      readiness: async () => ({ ready: brokerUp, broker: brokerUp }),
      refreshMetrics: async () => {
        refreshes++;
      },
      routes: {
        '/status': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"x":1}');
        },
      },
      notFoundHint: 'try /status',
    });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await get('/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await get('/readyz')).toMatchObject({
      status: 503,
      body: { status: 'not ready', state: 'starting', broker: true },
    });
    life.started();
    expect(await get('/readyz')).toMatchObject({
      status: 200,
      body: { status: 'ready', state: 'running', broker: true },
    });
    brokerUp = false;
    expect(await get('/readyz')).toMatchObject({ status: 503, body: { state: 'running', broker: false } });

    const metrics = await get('/metrics?x=1');
    expect(metrics.status).toBe(200);
    expect(String(metrics.body)).toContain('mcp_cluster_');
    expect(refreshes).toBe(1);

    expect(await get('/status')).toMatchObject({ status: 200, body: { x: 1 } });
    expect(await get('/nope')).toMatchObject({ status: 404, body: { error: 'no route /nope; try /status' } });
  });

  it('a /readyz check that throws answers 503, not a failure', async () => {
    const life = new Lifecycle();
    life.started();
    server = await startRoleServer({
      host: '127.0.0.1',
      port: 0,
      portSetting: '--port',
      lifecycle: life,
      readiness: async () => {
        throw new Error('broker gone');
      },
    });
    expect(await get('/readyz')).toMatchObject({
      status: 503,
      body: { status: 'not ready', state: 'running' },
    });
  });

  it('a busy port is INVALID_CONFIG naming the address and the setting', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const err = await startRoleServer({
        host: '127.0.0.1',
        port,
        portSetting: '--port or worker.port',
        lifecycle: new Lifecycle(),
        readiness: async () => ({ ready: true }),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClusterError);
      expect((err as ClusterError).code).toBe('INVALID_CONFIG');
      expect((err as ClusterError).message).toContain(`127.0.0.1:${port} (EADDRINUSE)`);
      expect((err as ClusterError).message).toContain('--port or worker.port');
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
