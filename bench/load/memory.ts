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

/**
 * CPU time (user + system) used so far by the processes in `pids` that are alive, in milliseconds,
 * from /proc/<pid>/stat (Linux only; 0 elsewhere). Clock ticks are 10 ms, so use it over runs of
 * many calls.
 */
export function cpuTimeMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command name, which is in parentheses and may hold spaces.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited: its time is lost, which a bench run notices as a missing process anyway
    }
  }
  return ticks * CLOCK_TICK_MS;
}

/** Linux's USER_HZ is 100 on every architecture Node runs on. */
const CLOCK_TICK_MS = 10;
