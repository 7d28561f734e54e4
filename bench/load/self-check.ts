import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { type CallToolResult, createMcpHandler, Server } from '@modelcontextprotocol/server';
import { type LoadOptions, type LoadResult, runLoad } from './agents.js';
import { type RssSample, sampleRss } from './memory.js';
import {
  latencyChartSvg,
  markdownReport,
  memoryChartSvg,
  type SystemRun,
  throughputChartSvg,
  writeResults,
} from './report.js';

/** A trivial MCP server: `echo` (optional delay, reports a synthetic cluster timing), `fail`, `slow`. */
export interface TrivialServer {
  url: string;
  /** Calls served, by the `text` argument of echo. */
  echoed: Map<string, number>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startTrivialServer(): Promise<TrivialServer> {
  const echoed = new Map<string, number>();
  const tools = [
    {
      name: 'echo',
      description: 'Returns its arguments.',
      inputSchema: {
        type: 'object',
        properties: { text: { type: 'string' }, delayMs: { type: 'number' } },
        required: ['text'],
      },
    },
    { name: 'fail', description: 'Always fails as a tool error.', inputSchema: { type: 'object' } },
    { name: 'slow', description: 'Answers after 400 ms.', inputSchema: { type: 'object' } },
  ];
  const handler = createMcpHandler(
    () => {
      const server = new Server(
        { name: 'load-self-check', version: '0.1.0' },
        { capabilities: { tools: {} } },
      );
      server.setRequestHandler('tools/list', () => ({ tools }) as never);
      server.setRequestHandler('tools/call', async (request): Promise<CallToolResult> => {
        const args = (request.params.arguments ?? {}) as { text?: string; delayMs?: number };
        switch (request.params.name) {
          case 'echo': {
            if (args.delayMs) await sleep(args.delayMs);
            echoed.set(String(args.text), (echoed.get(String(args.text)) ?? 0) + 1);
            return {
              content: [{ type: 'text', text: JSON.stringify(args) }],
              _meta: {
                'mcp-cluster/timing': {
                  queueWaitMs: 0.5,
                  batchWaitMs: 0,
                  backendMs: args.delayMs ?? 0,
                  deliveryMs: 0.1,
                },
              },
            };
          }
          case 'fail':
            return {
              content: [{ type: 'text', text: 'the backend is down' }],
              isError: true,
              _meta: { 'mcp-cluster/error-code': 'BACKEND_UNAVAILABLE' },
            };
          case 'slow':
            await sleep(400);
            return { content: [{ type: 'text', text: 'late' }] };
          default:
            throw new Error(`unknown tool ${request.params.name}`);
        }
      });
      return server;
    },
    { legacy: 'stateless' },
  );
  const serve = toNodeHandler(handler);
  const http: HttpServer = createServer((req, res) => {
    if (req.url?.split('?')[0] !== '/mcp') {
      res.writeHead(404).end();
      return;
    }
    serve(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const port = (http.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    echoed,
    close: async () => {
      await handler.close().catch(() => undefined);
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/**
 * Checks the load generator and its reports end to end against an in-process MCP server: both
 * clients in both loop modes for about a second each with 4 agents (calls made, none failed,
 * the tool mix and the timing breakdown seen), error classification (tool errors, client
 * timeouts), the maxCalls bound, RSS sampling, and that the Markdown, SVG and file output are
 * well formed. Throws an AssertionError on the first problem. `log` receives one line per run.
 */
export async function selfCheck(log: (line: string) => void = () => {}): Promise<void> {
  const server = await startTrivialServer();
  const rss = sampleRss([process.pid], 100);
  let rssSamples: RssSample[] = [];
  try {
    const runs: SystemRun[] = [];
    for (const client of ['v2', 'v1'] as const) {
      for (const mode of ['closed', 'open'] as const) {
        const before = new Map(server.echoed);
        const options: LoadOptions = {
          url: server.url,
          client,
          agents: 4,
          mode,
          ...(mode === 'open' ? { ratePerSec: 200 } : { thinkTimeMs: 2 }),
          toolMix: [
            { tool: 'echo', weight: 3, args: { text: 'a' } },
            { tool: 'echo', weight: 1, args: { text: 'b', delayMs: 2 } },
          ],
          durationMs: 1000,
          warmupMs: 200,
          callTimeoutMs: 5000,
          progress: mode === 'open',
          seed: 7,
        };
        const r = await runLoad(options);
        const label = `${client} ${mode}`;
        log(
          `${label}: ${r.calls} calls, ${r.ok} ok, errors ${JSON.stringify(r.errors)}, ${r.throughputPerSec}/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, measured ${r.measuredMs} ms`,
        );
        assert.ok(r.calls > 0, `${label}: no calls were made`);
        assert.deepEqual(r.errors, {}, `${label}: calls failed: ${JSON.stringify(r.errorSamples)}`);
        assert.equal(r.ok, r.calls, `${label}: ok ≠ calls`);
        assert.equal(r.latency.count, r.ok, `${label}: latency count ≠ ok`);
        assert.equal(r.byTool.echo?.count, r.ok, `${label}: byTool.echo count ≠ ok`);
        assert.ok(r.throughputPerSec > 0, `${label}: throughput 0`);
        assert.ok(Math.abs(r.measuredMs - 1000) < 1, `${label}: measured ${r.measuredMs} ms, not 1000`);
        assert.ok(r.latency.p50 > 0 && r.latency.p50 <= r.latency.p99 && r.latency.p99 <= r.latency.max);
        assert.ok(r.breakdown && r.breakdown.queueWaitMs.count === r.ok, `${label}: no timing breakdown`);
        assert.ok(Math.abs(r.breakdown.queueWaitMs.p50 - 0.5) < 0.01, `${label}: breakdown values wrong`);
        assert.equal(r.options.agents, 4);
        assert.ok(!('url' in r.options), `${label}: options carry the url`);
        const a = (server.echoed.get('a') ?? 0) - (before.get('a') ?? 0);
        const b = (server.echoed.get('b') ?? 0) - (before.get('b') ?? 0);
        assert.ok(a > b && b > 0, `${label}: tool mix not followed (a ${a}, b ${b})`);
        if (mode === 'open') {
          // 200/s over 1.2 s with a fast server: close to 200 recorded per second.
          assert.ok(r.throughputPerSec > 150 && r.throughputPerSec < 250, `${label}: open-loop rate off`);
        }
        runs.push({ system: label, agents: 4, result: r });
      }
    }

    // Error kinds: isError results by their cluster code, and the client's own timeout.
    for (const client of ['v2', 'v1'] as const) {
      const r = await runLoad({
        url: server.url,
        client,
        agents: 2,
        mode: 'closed',
        toolMix: [
          { tool: 'fail', weight: 1, args: {} },
          { tool: 'slow', weight: 1, args: {} },
        ],
        durationMs: 700,
        warmupMs: 0,
        callTimeoutMs: 150,
        seed: 3,
      });
      log(`${client} errors: ${JSON.stringify(r.errors)}`);
      assert.ok(
        (r.errors['tool_error:BACKEND_UNAVAILABLE'] ?? 0) > 0,
        `${client}: tool errors not classified`,
      );
      assert.ok(
        (r.errors.timeout ?? 0) > 0,
        `${client}: timeouts not classified: ${JSON.stringify(r.errors)}`,
      );
      assert.equal(r.ok, 0);
      assert.equal(
        r.calls,
        Object.values(r.errors).reduce((x, y) => x + y, 0),
      );
    }

    // maxCalls ends the run early.
    const startedAt = performance.now();
    const bounded = await runLoad({
      url: server.url,
      client: 'v2',
      agents: 4,
      mode: 'closed',
      toolMix: [{ tool: 'echo', weight: 1, args: { text: 'c' } }],
      durationMs: 10_000,
      warmupMs: 0,
      maxCalls: 20,
    });
    assert.equal(bounded.started, 20, 'maxCalls not respected');
    assert.equal(bounded.ok, 20);
    assert.ok(performance.now() - startedAt < 5000, 'maxCalls did not end the run early');
    assert.ok(bounded.measuredMs < 5000 && bounded.throughputPerSec > 0);

    rssSamples = rss.stop();
    if (existsSync('/proc/self/status')) {
      assert.ok(rssSamples.length >= 2, 'too few RSS samples');
      assert.ok((rssSamples[0]!.rssBytes[process.pid] ?? 0) > 1024 * 1024, 'RSS not read');
    }

    // Reports.
    const markdown = markdownReport('Self-check', runs, 'v2 closed');
    assert.ok(markdown.startsWith('## Self-check\n'));
    // 4 rows in the main table, 3 against the baseline, 4 in the breakdown.
    assert.equal(
      markdown.split('\n').filter((l) => /^\| v[12] (closed|open) \| 4 \|/.test(l)).length,
      4 + 3 + 4,
    );
    assert.ok(markdown.includes('### Against v2 closed'));
    assert.ok(markdown.includes('### Where the time went'));
    // A sweep over agent counts for the charts (the same results, reused as points).
    const sweep = runs.flatMap((run) => [1, 10, 100].map((agents) => ({ ...run, agents })));
    const charts: Record<string, string> = {
      'latency-p50': latencyChartSvg(runs, 'p50'),
      'latency-p99': latencyChartSvg(sweep, 'p99'),
      throughput: throughputChartSvg(sweep),
      memory: memoryChartSvg('RSS of the self-check', [{ name: 'load generator', samples: rssSamples }]),
    };
    for (const [name, svg] of Object.entries(charts)) {
      checkSvg(name, svg, name === 'memory' ? 1 : 4);
    }
    const dir = mkdtempSync(join(tmpdir(), 'mcp-load-check-'));
    try {
      const paths = writeResults(dir, 'self-check', { json: { runs }, markdown, charts });
      assert.equal(paths.length, 2 + Object.keys(charts).length);
      for (const p of paths) assert.ok(existsSync(p), `${p} not written`);
      const json = JSON.parse(readFileSync(join(dir, 'self-check.json'), 'utf8')) as {
        runs: { result: LoadResult }[];
      };
      assert.equal(json.runs.length, 4);
      assert.ok(existsSync(join(dir, 'self-check-latency-p99.svg')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    rss.stop();
    await server.close();
  }
}

/** The SVG is one balanced element tree rooted at <svg>, with one <path> per series. */
function checkSvg(name: string, svg: string, series: number): void {
  assert.ok(svg.startsWith('<svg'), `${name}: does not start with <svg`);
  assert.ok(svg.trimEnd().endsWith('</svg>'), `${name}: does not end with </svg>`);
  assert.ok(svg.includes('xmlns="http://www.w3.org/2000/svg"'), `${name}: no SVG namespace`);
  const paths = svg.match(/<path\b/g)?.length ?? 0;
  assert.equal(paths, series, `${name}: ${paths} <path> elements for ${series} series`);
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, closing, tag, , selfClosing] = m;
    if (selfClosing) continue;
    if (closing) assert.equal(stack.pop(), tag, `${name}: unbalanced </${tag}>`);
    else stack.push(tag!);
  }
  assert.equal(stack.length, 0, `${name}: unclosed <${stack.join('>, <')}>`);
  const tags = svg.match(/</g)?.length ?? 0;
  const parsed = [...svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)].length;
  assert.equal(parsed, tags, `${name}: a tag could not be parsed (stray < or bad attribute)`);
}
