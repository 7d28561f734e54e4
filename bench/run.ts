import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * `npm run bench -- <scenario> [flags]`: runs one benchmark scenario as its own process so each
 * starts from a clean heap. Each scenario prints a Markdown table and writes JSON under
 * bench/results/.
 */
const SCENARIOS: Record<string, string> = {
  embeddings: 'micro-batching against per-call forwarding and the simulated GPU batch capacity',
  affinity: 'time to first token of multi-turn sessions, session affinity against round-robin',
};

const [scenario, ...rest] = process.argv.slice(2);
const usage = `usage: npm run bench -- <scenario> [flags]\n\nscenarios:\n${Object.entries(SCENARIOS)
  .map(([name, what]) => `  ${name.padEnd(12)} ${what}`)
  .join('\n')}\n`;

if (!scenario || scenario === '--help' || scenario === '-h') {
  process.stdout.write(usage);
  process.exit(scenario ? 0 : 2);
}
if (!(scenario in SCENARIOS)) {
  process.stderr.write(`bench: unknown scenario "${scenario}"\n\n${usage}`);
  process.exit(2);
}
const script = fileURLToPath(new URL(`./${scenario}.js`, import.meta.url));
if (!existsSync(script)) {
  process.stderr.write(`bench: ${script} is missing; run npm run build first\n`);
  process.exit(2);
}
const run = spawnSync(process.execPath, [script, ...rest], { stdio: 'inherit' });
process.exit(run.status ?? 1);
