import { readFileSync } from 'node:fs';

/** Resident set sizes at one moment, in bytes, by process id. */
export interface RssSample {
  /** Milliseconds since sampling started. */
  atMs: number;
  rssBytes: Record<number, number>;
}

/**
 * Samples the resident set size (VmRSS of /proc/<pid>/status, so Linux only) of `pids` every
 * `intervalMs`, starting now. Processes that exited (or that cannot be read) are left out of
 * a sample; a sample where none could be read is dropped. `stop()` takes a last sample, stops
 * and returns them all. The timer does not keep the process alive.
 */
export function sampleRss(pids: number[], intervalMs: number): { stop(): RssSample[] } {
  const started = performance.now();
  const samples: RssSample[] = [];
  const live = new Set(pids);
  const take = (): void => {
    const rssBytes: Record<number, number> = {};
    let any = false;
    for (const pid of live) {
      const rss = readRss(pid);
      if (rss === undefined) {
        live.delete(pid);
        continue;
      }
      rssBytes[pid] = rss;
      any = true;
    }
    if (any) samples.push({ atMs: Math.round(performance.now() - started), rssBytes });
  };
  take();
  const timer = setInterval(take, Math.max(10, intervalMs));
  timer.unref();
  let stopped = false;
  return {
    stop() {
      if (!stopped) {
        stopped = true;
        clearInterval(timer);
        take();
      }
      return samples;
    },
  };
}

/** VmRSS of one process in bytes; undefined if it is gone or this is not Linux. */
export function readRss(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s*kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Largest total RSS (summed over the processes of a sample), in bytes; 0 for no samples. */
export function peakRssBytes(samples: RssSample[] | undefined): number {
  let peak = 0;
  for (const s of samples ?? []) {
    let total = 0;
    for (const v of Object.values(s.rssBytes)) total += v;
    if (total > peak) peak = total;
  }
  return peak;
}
