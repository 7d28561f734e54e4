import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The q-quantile of sorted values (nearest rank); 0 for none. */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

/**
 * Writes a scenario's JSON report as `<outDir>/<scenario>-<startedAt>.json` and returns its path.
 * `outDir` defaults to `bench/results` under the working directory; `null` writes nothing.
 */
export function writeReport(
  scenario: string,
  startedAt: string,
  report: unknown,
  outDir?: string | null,
): string | undefined {
  const dir = outDir === undefined ? join(process.cwd(), 'bench', 'results') : outDir;
  if (dir === null) return undefined;
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${scenario}-${startedAt.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  return file;
}
