/**
 * `npm run bench -- cpu [system] [agents] [seconds] [--auth none|api-keys|oauth]`: where a
 * system's CPU goes per call, by process (ingress, each worker, the broker), under the overhead
 * scenario's zero-latency load. `--auth` (cluster-memory only) makes every call present an API key
 * or an OAuth access token, to measure what authenticating costs.
 */
import { readFileSync } from 'node:fs';
import { runLoad } from './load/agents.js';
import { cpuTimeMs } from './load/memory.js';
import { runIfMain } from './main.js';
import { MIX, startSim, ZERO_LATENCY } from './scenarios.js';
import { type BenchAuthMode, prepareBenchAuth } from './systems/auth.js';
import { type SystemName, startSystem } from './systems/index.js';

function nameOf(pid: number): string {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    const role = args.findIndex((a) => ['ingress', 'worker', 'up'].includes(a));
    if (role >= 0)
      return args
        .slice(role, role + 3)
        .join(' ')
        .replace(/ --config.*/, '');
    return (args[0] ?? String(pid)).split('/').pop() ?? String(pid);
  } catch {
    return String(pid);
  }
}

const AUTH_MODES: readonly BenchAuthMode[] = ['none', 'api-keys', 'oauth'];

async function main(argv: string[]): Promise<number> {
  const flag = argv.indexOf('--auth');
  const authMode = (flag >= 0 ? argv[flag + 1] : 'none') as BenchAuthMode;
  if (!AUTH_MODES.includes(authMode))
    throw new Error(`--auth takes ${AUTH_MODES.join(', ')}, got "${authMode}"`);
  const positional = flag >= 0 ? [...argv.slice(0, flag), ...argv.slice(flag + 2)] : argv;
  const system = (positional[0] ?? 'cluster-nats') as SystemName;
  const agents = Number(positional[1] ?? 16);
  const seconds = Number(positional[2] ?? 5);
  const auth = await prepareBenchAuth(authMode);
  const sim = await startSim(ZERO_LATENCY);
  const sut = await startSystem(system, { backendUrl: sim.url, ...(auth ? { auth } : {}) }).catch(
    async (err) => {
      await sim.stop();
      await auth?.close();
      throw err;
    },
  );
  try {
    const before = new Map(sut.pids.map((pid) => [pid, cpuTimeMs([pid])]));
    const result = await runLoad({
      client: 'v2',
      mode: 'closed',
      toolMix: MIX,
      durationMs: seconds * 1000,
      warmupMs: 1000,
      url: sut.url,
      agents,
      ...(auth ? { headers: auth.headers } : {}),
    });
    const calls = result.started ?? result.ok;
    process.stdout.write(
      `${system} (auth ${authMode}) @ ${agents} agents: ${calls} calls, ${result.throughputPerSec.toFixed(1)}/s\n`,
    );
    for (const pid of sut.pids) {
      const ms = cpuTimeMs([pid]) - (before.get(pid) ?? 0);
      process.stdout.write(`  ${nameOf(pid).padEnd(28)} ${(ms / calls).toFixed(2)} ms CPU per call\n`);
    }
  } finally {
    await sut.stop();
    await sim.stop();
    await auth?.close();
  }
  return 0;
}

runIfMain(import.meta.url, 'cpu', main);
