import { spawn } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackendRefusal, postJson, readJson, readSse } from '../workers/runtime/index.js';
import { type Cleanup, cleanupAfterEach, rejection, startSim } from './support/adapter-harness.js';
import { selfSignedCertificate } from './support/tls.js';
import { waitFor } from './support/wait.js';

// The workers' HTTP client to GPU backends (workers/runtime/backend-http.ts) at the edges the
// adapter tests do not reach: connection reuse, connections that break mid-body, SSE framing,
// the call's signal listener, and https.

const cleanups = cleanupAfterEach();

/** A server whose handler the test writes; counts the TCP connections it accepted. */
async function server(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; connections: () => number }> {
  let connections = 0;
  const srv: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handler(req, res));
  });
  srv.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, connections: () => connections };
}

async function collect(events: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const data of events) out.push(data);
  return out;
}

describe('backend requests', () => {
  it('reuses one keep-alive connection for calls one after another', async () => {
    const backend = await server((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
    const signal = new AbortController().signal;
    for (let i = 0; i < 3; i++) {
      const res = await postJson(`${backend.url}/v1/embeddings`, { i }, signal, 5000);
      expect(await readJson(res, backend.url, signal)).toEqual({ ok: true });
    }
    expect(backend.connections()).toBe(1);
    // Each exchange let go of the call's signal once it was over.
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('sends the JSON body with its length', async () => {
    let seen: { length?: string; type?: string; body: string } | undefined;
    const srv = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => {
        body += c;
      });
      req.on('end', () => {
        seen = { length: req.headers['content-length'], type: req.headers['content-type'], body };
        res.writeHead(200).end('{}');
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => srv.close(() => resolve())));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/x`;
    const signal = new AbortController().signal;
    await readJson(await postJson(url, { text: 'héllo' }, signal, 5000), url, signal);
    expect(seen).toEqual({
      length: String(Buffer.byteLength('{"text":"héllo"}')),
      type: 'application/json',
      body: '{"text":"héllo"}',
    });
  });

  it('a backend that closes the connection mid-body is BACKEND_UNAVAILABLE, not malformed JSON', async () => {
    const backend = await server((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"data":[', () => res.destroy());
    });
    const signal = new AbortController().signal;
    const res = await postJson(`${backend.url}/v1/embeddings`, {}, signal, 5000);
    const err = await rejection(readJson(res, backend.url, signal));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('broke off its answer');
  });

  it('a stream whose connection drops after some events yields them, then BACKEND_UNAVAILABLE', async () => {
    const backend = await server((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: one\n\n', () => res.destroy());
    });
    const signal = new AbortController().signal;
    const res = await postJson(`${backend.url}/v1/chat/completions`, {}, signal, 5000);
    const seen: string[] = [];
    const err = await rejection(
      (async () => {
        for await (const data of readSse(res, backend.url, signal)) seen.push(data);
      })(),
    );
    expect(seen).toEqual(['one']);
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('broke off its stream');
  });

  it('a refusal whose body never comes is still answered within the timeout', async () => {
    const backend = await server((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.flushHeaders();
    });
    const err = await rejection(
      postJson(`${backend.url}/v1/embeddings`, {}, new AbortController().signal, 200),
    );
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.cause).toBeInstanceOf(BackendRefusal);
    expect((err.cause as BackendRefusal).status).toBe(400);
  });

  it('a call cancelled before the headers arrived is CANCELLED and lets go of its signal', async () => {
    const backend = await server(() => {
      // Never answers.
    });
    const abort = new AbortController();
    const pending = postJson(`${backend.url}/v1/embeddings`, {}, abort.signal, 60_000);
    await waitFor('the request to reach the server', () => backend.connections() === 1);
    abort.abort();
    expect((await rejection(pending)).code).toBe('CANCELLED');
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
    // An already aborted signal sends nothing.
    expect((await rejection(postJson(`${backend.url}/x`, {}, abort.signal, 1000))).code).toBe('CANCELLED');
    expect(backend.connections()).toBe(1);
  });
});

describe('readSse', () => {
  const stream = (...chunks: string[]) =>
    server((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Each chunk its own write, a moment apart, so the client sees them as separate reads.
      const next = (i: number) => {
        if (i === chunks.length) {
          res.end();
          return;
        }
        res.write(chunks[i], () => setTimeout(() => next(i + 1), 5));
      };
      next(0);
    });

  it('joins data lines, skips comments and other fields, handles CRLF and events split across reads', async () => {
    // The euro sign's three bytes divided between two reads.
    const raw = await server((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const bytes = Buffer.from('data: split €\n\ndata: [DONE]\n\n', 'utf8');
      const cut = bytes.indexOf(0xe2) + 1;
      res.write(bytes.subarray(0, cut), () => setTimeout(() => res.end(bytes.subarray(cut)), 5));
    });
    const signal = new AbortController().signal;
    const framed = await stream(
      ': keep-alive\n\n',
      'data: {"a":1}\n\ndata:no-space\n',
      '\nevent: x\ndata: first\ndata:  second\nid: 7\n\n',
      'data: crlf\r\n\r\n: c\r\ndata: also\r\n\r',
      '\n',
    );
    const res = await postJson(`${framed.url}/v1/chat/completions`, {}, signal, 5000);
    expect(await collect(readSse(res, framed.url, signal))).toEqual([
      '{"a":1}',
      'no-space',
      'first\n second',
      'crlf',
      'also',
    ]);
    const res2 = await postJson(`${raw.url}/v1/chat/completions`, {}, signal, 5000);
    expect(await collect(readSse(res2, raw.url, signal))).toEqual(['split €', '[DONE]']);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('stopping early closes the connection, so the sim counts the request aborted', async () => {
    const backend = await startSim(cleanups as Cleanup[], { ttftMs: 1, tokensPerSecond: 200 });
    const signal = new AbortController().signal;
    const url = `${backend.url}/v1/chat/completions`;
    const res = await postJson(
      url,
      { model: 'sim-llm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 500, stream: true },
      signal,
      5000,
    );
    for await (const data of readSse(res, url, signal)) {
      expect(data).not.toBe('[DONE]');
      break;
    }
    await waitFor('the sim to count the aborted sequence', () => backend.stats().aborted === 1);
    expect(backend.stats()).toMatchObject({ completed: 0, running: 0 });
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('a stream read to its end keeps its connection for the next call', async () => {
    const backend = await stream('data: a\n\n', 'data: [DONE]\n\n');
    const signal = new AbortController().signal;
    const url = `${backend.url}/v1/chat/completions`;
    for (let i = 0; i < 2; i++) {
      expect(await collect(readSse(await postJson(url, {}, signal, 5000), url, signal))).toEqual([
        'a',
        '[DONE]',
      ]);
    }
    expect(backend.connections()).toBe(1);
  });
});

describe('https backends', () => {
  it('posts and reads JSON over TLS', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'backend-https-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const tls = selfSignedCertificate(dir, '127.0.0.1');
    const srv = createHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"tls":true}'));
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => srv.close(() => resolve())));
    const url = `https://127.0.0.1:${(srv.address() as AddressInfo).port}/v1/embeddings`;

    // This process does not trust the test's certificate: the TLS failure is an unreachable backend.
    const err = await rejection(postJson(url, {}, new AbortController().signal, 5000));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toMatch(/unreachable: .*(SELF_SIGNED|CERT)/);

    // A worker that trusts it (NODE_EXTRA_CA_CERTS, read at start) gets the answer.
    const script = `
      import { postJson, readJson } from './dist/workers/runtime/index.js';
      const signal = new AbortController().signal;
      const res = await postJson(${JSON.stringify(url)}, { a: 1 }, signal, 5000);
      process.stdout.write(JSON.stringify(await readJson(res, 'x', signal)));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: tls.certFile },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ tls: true });
  });
});
