import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { isMain, runMain } from './entry.js';
import { SYSTEM_NAMES, type SystemName, type SystemUnderTest, startSystem } from './index.js';
import { type ChildRole, CLI, jsonLine, spawnRole } from './process.js';

// A smoke test of the systems under test: start each, list its tools and call generate_text and
// embed once with the v2 client in each protocol era it serves, check the answers, stop it.
//
//   node dist/bench/systems/smoke.js [system ...]
//
// starts a zero-latency simulated backend of its own and smokes the named systems (default all).

/**
 * Flags of `mcp-cluster sim` for a backend that adds (almost) no latency: no time to first token,
 * no prefill or embedding cost, free batching and no sequence limit. `tokens-per-second` must be
 * above 0; at 10^9 a 256-token answer is due within a microsecond of virtual time, and the decode
 * loop completes every due step in one timer tick.
 */
export const ZERO_LATENCY_SIM_ARGS: readonly string[] = [
  '--ttft-ms',
  '0',
  '--per-prompt-token-ms',
  '0',
  '--tokens-per-second',
  '1000000000',
  '--batch-penalty',
  '0',
  '--max-num-seqs',
  '1000000',
  '--embed-fixed-ms',
  '0',
  '--embed-per-token-ms',
  '0',
];

/** A simulated backend process started for the bench. */
export interface SimProcess {
  readonly url: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts `mcp-cluster sim` with `args` (default: zero latency) on a free port. */
export async function startSimProcess(args: readonly string[] = ZERO_LATENCY_SIM_ARGS): Promise<SimProcess> {
  const role: ChildRole<Record<string, unknown>> = await spawnRole({
    name: 'sim',
    command: process.execPath,
    args: [CLI, 'sim', '--port', '0', ...args],
    ready: jsonLine,
    timeoutMs: 15_000,
  });
  return { url: String(role.ready.url), pid: role.pid, stop: () => role.stop(3000) };
}

type Era = '2026-07-28' | '2025';

/** A v2 client connected to `url` in `era`: pinned to 2026-07-28, or the plain 2025 initialize handshake. */
async function connect(url: string, era: Era): Promise<Client> {
  const client = new Client(
    { name: 'bench-smoke', version: '1.0.0' },
    era === '2026-07-28' ? { versionNegotiation: { mode: { pin: '2026-07-28' } } } : {},
  );
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

/** Lists tools and calls each once; throws naming what was wrong. Returns a one-line summary. */
async function exercise(system: SystemUnderTest, era: Era): Promise<string> {
  const client = await connect(system.url, era);
  try {
    const t0 = performance.now();
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const needed of ['generate_text', 'embed']) {
      if (!names.includes(needed)) throw new Error(`tools/list lacks ${needed} (has ${names.join(', ')})`);
    }
    const t1 = performance.now();
    const generated = await client.callTool(
      { name: 'generate_text', arguments: { prompt: 'Write a haiku about queues', max_tokens: 32 } },
      { timeout: 30_000 },
    );
    const text = (generated.content as { type: string; text?: string }[]).find(
      (c) => c.type === 'text',
    )?.text;
    if (generated.isError || !text)
      throw new Error(`generate_text failed: ${JSON.stringify(generated).slice(0, 500)}`);
    const t2 = performance.now();
    const texts = ['the first text', 'the second text', 'the third text'];
    const embedded = await client.callTool({ name: 'embed', arguments: { texts } }, { timeout: 30_000 });
    const structured = embedded.structuredContent as
      | { vectors?: number[][]; dimensions?: number }
      | undefined;
    const vectors = structured?.vectors ?? [];
    if (embedded.isError || vectors.length !== texts.length || !(vectors[0]?.length ?? 0)) {
      throw new Error(`embed failed: ${JSON.stringify(embedded).slice(0, 500)}`);
    }
    const norm = Math.sqrt((vectors[0] as number[]).reduce((s, x) => s + x * x, 0));
    if (Math.abs(norm - 1) > 1e-6) throw new Error(`embed returned a vector of norm ${norm}, expected 1`);
    const t3 = performance.now();
    const ms = (a: number, b: number) => `${(b - a).toFixed(1)}ms`;
    return `${client.getNegotiatedProtocolVersion() ?? era}: tools/list ${names.length} tools ${ms(t0, t1)}, generate_text ${text.length} chars ${ms(t1, t2)}, embed ${vectors.length}x${vectors[0]?.length} ${ms(t2, t3)}`;
  } finally {
    await client.close().catch(() => undefined);
  }
}

/**
 * Starts each system in turn against `backendUrl`, lists its tools, calls generate_text and embed
 * once in every protocol era it serves, checks the answers, and stops it. Prints one line per
 * system and era; throws after trying all, naming every system that failed.
 */
export async function systemsSmoke(
  backendUrl: string,
  names: SystemName[] = [...SYSTEM_NAMES],
): Promise<void> {
  const failures: string[] = [];
  for (const name of names) {
    let system: SystemUnderTest | undefined;
    try {
      system = await startSystem(name, { backendUrl });
      process.stdout.write(
        `${name}: started in ${system.startupMs} ms at ${system.url}, pids ${system.pids.join(' ')}, serves ${system.protocol}\n`,
      );
      const eras: Era[] = system.protocol === '2026-07-28' ? ['2026-07-28', '2025'] : ['2025'];
      for (const era of eras) process.stdout.write(`  ${await exercise(system, era)}\n`);
    } catch (err) {
      failures.push(`${name}: ${(err as Error).message}`);
      process.stdout.write(`${name}: FAILED ${(err as Error).message}\n`);
    } finally {
      if (system) {
        const t = performance.now();
        await system.stop();
        const alive = system.pids.filter(isAlive);
        process.stdout.write(
          `  stopped in ${Math.round(performance.now() - t)} ms${alive.length ? `, STILL ALIVE: ${alive.join(' ')}` : ''}\n`,
        );
        if (alive.length) failures.push(`${name}: processes ${alive.join(' ')} outlived stop()`);
      }
    }
  }
  if (failures.length)
    throw new Error(`smoke failed for ${failures.length} system(s):\n${failures.join('\n')}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const names = process.argv.slice(2) as SystemName[];
  for (const name of names) {
    if (!SYSTEM_NAMES.includes(name))
      throw new Error(`unknown system "${name}"; one of ${SYSTEM_NAMES.join(', ')}`);
  }
  const sim = await startSimProcess();
  process.stdout.write(`sim: ${sim.url} (pid ${sim.pid}), ${ZERO_LATENCY_SIM_ARGS.join(' ')}\n`);
  try {
    await systemsSmoke(sim.url, names.length ? names : [...SYSTEM_NAMES]);
  } finally {
    await sim.stop();
  }
  process.stdout.write('smoke: all systems passed\n');
}

if (isMain(import.meta.url)) runMain('smoke', main);
