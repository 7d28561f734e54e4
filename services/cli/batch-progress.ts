// What `mcp-cluster batch` shows of a job: the Batch object it reads and the progress line of `--wait`.

/** The OpenAI Batch object as the cluster's `/v1/batches` answers it (the fields read here). */
export interface BatchObject {
  id: string;
  status: string;
  model?: string;
  errors: { data: { message: string; line: number | null }[] } | null;
  input_file_id: string | null;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  expires_at: number;
  completed_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
}

/** The job states nothing changes any more. */
export const FINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled', 'expired']);

/**
 * The progress of a job: on a terminal one line redrawn in place (`\r`) at most four times a
 * second with rows done/total, percent, rate, ETA and failed rows; elsewhere a plain line per
 * state change and at most one every five seconds.
 */
export class ProgressView {
  private readonly samples: { at: number; done: number }[] = [];
  private lastDraw = Number.NEGATIVE_INFINITY;
  private lastStatus: string | undefined;
  private drawn = false;

  constructor(
    private readonly write: (text: string) => void,
    private readonly tty: boolean,
    private readonly now: () => number = Date.now,
    /** The terminal's width: a longer line would wrap, and `\r` redraw only its last row. */
    private readonly columns: () => number | undefined = () => undefined,
  ) {}

  update(job: BatchObject): void {
    const at = this.now();
    const { completed, failed, total } = job.request_counts;
    const done = completed + failed;
    this.samples.push({ at, done });
    // The rate over the last ten seconds: recent enough to follow a change of speed.
    while (this.samples.length > 2 && at - (this.samples[1]?.at ?? at) >= RATE_WINDOW_MS)
      this.samples.shift();
    const changed = job.status !== this.lastStatus;
    this.lastStatus = job.status;
    const final = FINAL.has(job.status);
    const every = this.tty ? TTY_REDRAW_MS : PLAIN_LINE_MS;
    if (!changed && !final && at - this.lastDraw < every) return;
    this.lastDraw = at;
    const parts = this.partsOf(job, done, total, failed, at);
    if (this.tty) {
      // On a narrow terminal the bar goes first, then the id: the numbers always show.
      // A terminal that does not say its width (0, as under `script`) is taken as wide enough.
      const columns = this.columns();
      const width = columns && columns >= 20 ? columns - 1 : Number.POSITIVE_INFINITY;
      let line = [parts.id, parts.status, parts.bar, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.id, parts.status, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.status, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.status, ...parts.numbers].join(' ');
      this.write(`\r${line.slice(0, width)}\x1b[K`);
      this.drawn = true;
    } else this.write(`${[parts.id, parts.status, ...parts.numbers].join('  ')}\n`);
  }

  /** Ends the redrawn line. */
  end(): void {
    if (this.tty && this.drawn) this.write('\n');
    this.drawn = false;
  }

  private partsOf(job: BatchObject, done: number, total: number, failed: number, at: number) {
    const fraction = total > 0 ? done / total : 0;
    const oldest = this.samples[0];
    const seconds = oldest ? (at - oldest.at) / 1000 : 0;
    const rate = oldest && seconds >= 0.5 ? (done - oldest.done) / seconds : undefined;
    const left = total - done;
    const eta =
      FINAL.has(job.status) || left <= 0 ? '0s' : rate && rate > 0 ? durationText(left / rate) : '--';
    return {
      id: job.id,
      status: job.status,
      bar: bar(fraction),
      numbers: [
        `${done}/${total} rows`,
        `${(fraction * 100).toFixed(1)}%`,
        `${rate === undefined ? '--' : rate < 10 ? rate.toFixed(1) : Math.round(rate)} rows/s`,
        `ETA ${eta}`,
        `failed ${failed}`,
      ],
    };
  }
}

const RATE_WINDOW_MS = 10_000;
const TTY_REDRAW_MS = 250;
const PLAIN_LINE_MS = 5000;

function bar(fraction: number): string {
  const width = 20;
  const full = Math.min(width, Math.floor(fraction * width));
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

/** `45s`, `3m05s`, `2h07m`. */
export function durationText(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
