import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../test/support/browser.js';
import { connectClient, type TestClient } from '../test/support/mcp-clients.js';

// Takes the docs' picture of the status page (docs/operations.md): starts `mcp-cluster up --autoscale` (every role in
// one process, simulated backends), puts a short load on it (agents of three tenants calling
// generate_text, summarize and embed, and a batch embedding job of another tenant), and
// screenshots `/status` in headless Chromium while the load runs.
//
//   npm run build && node dist/bench/status-screenshot.js [docs/status-page.png]

/** The built CLI, beside this script under dist/. */
const CLI = fileURLToPath(new URL('../services/cli/main.js', import.meta.url));

/** Agents per tenant: acme floods, the others call at a normal pace. */
const TENANT_AGENTS: Record<string, number> = { acme: 16, globex: 6, initech: 3 };
/** How long the load runs before the screenshot, in ms. */
const LOAD_MS = 12_000;
/** Lines of the batch job. */
const BATCH_LINES = 40_000;

async function main(): Promise<void> {
  const out = resolve(process.argv[2] ?? 'docs/status-page.png');
  const up = spawn(process.execPath, [CLI, 'up', '--autoscale', '--port', '0'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  try {
    const status = await statusUrlOf(up);
    const base = status.replace(/\/status$/, '');
    await submitBatch(base, 'datalake');
    let running = true;
    const agents: Promise<void>[] = [];
    const clients: TestClient[] = [];
    for (const [tenant, n] of Object.entries(TENANT_AGENTS)) {
      for (let i = 0; i < n; i++) {
        const client = await connectClient('v2', `${base}/mcp`, {
          headers: { 'mcp-cluster-tenant': tenant },
        });
        clients.push(client);
        agents.push(agent(client, i, () => running));
      }
    }
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
      await page.goto(status);
      await new Promise((r) => setTimeout(r, LOAD_MS));
      mkdirSync(dirname(out), { recursive: true });
      await page.screenshot({ path: out, fullPage: true });
      process.stdout.write(`wrote ${out}\n`);
    } finally {
      await browser.close();
      running = false;
      await Promise.allSettled(agents);
      await Promise.allSettled(clients.map((c) => c.close()));
    }
  } finally {
    up.kill('SIGTERM');
  }
}

/** One agent: calls in a loop, one at a time, until `running()` is false. */
async function agent(client: TestClient, i: number, running: () => boolean): Promise<void> {
  for (let n = 0; running(); n++) {
    const pick = (i + n) % 5;
    const call =
      pick < 2
        ? client.callTool('generate_text', { prompt: `agent ${i} step ${n}`, max_tokens: 24 + (n % 3) * 16 })
        : pick < 4
          ? client.callTool('embed', { texts: [`agent ${i}`, `step ${n}`, 'status page'] })
          : client.callTool('summarize', {
              text: `agent ${i} wrote step ${n} of a long report`,
              max_words: 20,
            });
    await call.catch(() => undefined);
  }
}

/** Uploads a JSONL file and starts a batch embedding job on it, as tenant `tenant`. */
async function submitBatch(base: string, tenant: string): Promise<void> {
  const lines = Array.from({ length: BATCH_LINES }, (_, i) =>
    JSON.stringify({ id: `doc-${i}`, text: `document ${i}` }),
  );
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([`${lines.join('\n')}\n`]), 'docs.jsonl');
  const headers = { 'mcp-cluster-tenant': tenant };
  const file = (await (await fetch(`${base}/v1/files`, { method: 'POST', body: form, headers })).json()) as {
    id: string;
  };
  const batch = await fetch(`${base}/v1/batches`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' }),
  });
  if (!batch.ok) throw new Error(`batch submit failed: HTTP ${batch.status} ${await batch.text()}`);
}

/** Reads `up`'s start-up output until it names the status page. */
function statusUrlOf(child: ChildProcess): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    let text = '';
    child.stdout?.on('data', (part: Buffer) => {
      text += part.toString();
      const m = /status page \(live\):\s+(\S+)/.exec(text);
      if (m?.[1]) resolvePromise(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`mcp-cluster up exited (${code}) before it was up`)));
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
