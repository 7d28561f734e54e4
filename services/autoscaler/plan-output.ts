import type { CapacityPlan, PoolBatchPlan } from './plan.js';
import { GIB } from './queueing.js';

// How a capacity plan is written out: JSON for tools (`plan --json`) and a table for people.

/** JSON value of a number: non-finite numbers (unknown NaN, unbounded Infinity) become null. */
function jsonNumber(value: number | undefined): number | null {
  return value === undefined || !Number.isFinite(value) ? null : value;
}

/**
 * The plan as plain JSON (`mcp-cluster plan --json`): the same fields as {@link CapacityPlan}, with every
 * number that is unknown (NaN) or unbounded (Infinity) as null; `stableNow` tells the two apart for the
 * current wait (false: the load is at or above the current capacity, the queue grows without bound).
 */
export function planToJson(plan: CapacityPlan): Record<string, unknown> {
  return {
    model: plan.model,
    openLoopModel: plan.openLoopModel,
    targetWaitMs: plan.targetWaitMs,
    percentile: plan.percentile,
    whatIf: plan.whatIf,
    batchDeadlineMs: plan.batchDeadlineMs ?? null,
    windowMs: plan.windowMs,
    priceTable: plan.priceTable,
    gpuTiers: plan.gpuTiers.map((t) => ({
      name: t.name,
      memoryBytes: t.memoryBytes,
      pricePerHour: t.pricePerHour,
    })),
    pools: plan.pools.map((p) => ({
      pool: p.pool,
      observedArrivalPerSec: p.observedArrivalPerSec,
      arrivalPerSec: p.arrivalPerSec,
      completedPerSec: p.completedPerSec,
      meanServiceMs: jsonNumber(p.meanServiceMs),
      p95ServiceMs: jsonNumber(p.p95ServiceMs),
      serviceCs2: jsonNumber(p.serviceCs2),
      model: p.model,
      agents: p.agents ?? null,
      thinkTimeMs: jsonNumber(p.thinkTimeMs),
      inFlight: p.inFlight,
      queueDepth: p.queueDepth,
      oldestWaitMs: p.oldestWaitMs,
      replicas: p.replicas,
      replicaConcurrency: p.replicaConcurrency,
      offeredLoad: jsonNumber(p.offeredLoad),
      utilization: jsonNumber(p.utilization),
      waitMs: jsonNumber(p.waitMs),
      meanWaitMs: jsonNumber(p.meanWaitMs),
      stableNow: Number.isFinite(p.waitMs),
      neededReplicas: p.neededReplicas ?? null,
      neededForWait: p.neededForWait ?? null,
      neededAtUpperRate: p.neededAtUpperRate ?? null,
      outstandingReplicas: p.outstandingReplicas,
      utilizationAtNeeded: jsonNumber(p.utilizationAtNeeded),
      waitAtNeededMs: jsonNumber(p.waitAtNeededMs),
      maxReplicas: p.maxReplicas,
      gpu: p.gpu
        ? {
            memoryPerReplicaBytes: p.gpu.memoryPerReplicaBytes,
            weightsBytes: p.gpu.weightsBytes,
            kvCacheBytes: p.gpu.kvCacheBytes,
            tier: p.gpu.tier ?? null,
            gpusPerReplica: p.gpu.gpusPerReplica,
            pricePerGpuHour: jsonNumber(p.gpu.pricePerGpuHour),
            gpus: jsonNumber(p.gpu.gpus),
            costPerHour: jsonNumber(p.gpu.costPerHour),
          }
        : null,
      batch: p.batch
        ? {
            queued: p.batch.queued,
            inFlight: p.batch.inFlight,
            backlog: p.batch.backlog,
            perReplicaPerSec: jsonNumber(p.batch.perReplicaPerSec),
            etaMs: jsonNumber(p.batch.etaMs),
            // Tells the two nulls of etaMs apart, like stableNow: false is "never at these replicas".
            progressingNow: p.batch.etaMs !== Number.POSITIVE_INFINITY,
            deadlineMs: p.batch.deadlineMs,
            neededReplicas: p.batch.neededReplicas ?? null,
          }
        : null,
      notes: p.notes,
    })),
    totalGpus: plan.totalGpus,
    totalCostPerHour: plan.totalCostPerHour,
    assumptions: plan.assumptions,
    notes: plan.notes,
  };
}

/** `p95`, `p99.9` */
export function percentileLabel(p: number): string {
  return `p${Number((p * 100).toFixed(4))}`;
}

export function formatRate(perSec: number): string {
  if (!Number.isFinite(perSec)) return '—';
  if (perSec === 0) return '0';
  return perSec < 10 ? perSec.toFixed(2) : perSec < 1000 ? perSec.toFixed(1) : perSec.toFixed(0);
}

export function formatMs(ms: number): string {
  if (Number.isNaN(ms)) return '—';
  if (ms === Number.POSITIVE_INFINITY) return '∞';
  if (ms === 0) return '0 ms';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

/** A span that may run to hours (an ETA, a deadline): `45 s`, `12.5 min`, `3.2 h`; `∞`, `—`. */
export function formatDuration(ms: number): string {
  if (Number.isNaN(ms)) return '—';
  if (ms === Number.POSITIVE_INFINITY) return '∞';
  if (ms < 60_000) return formatMs(ms);
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function formatShare(fraction: number): string {
  if (Number.isNaN(fraction)) return '—';
  if (fraction === Number.POSITIVE_INFINITY) return '∞';
  if (fraction === 0) return '0%';
  const percent = fraction * 100;
  // Small shares keep two significant digits, so a lightly loaded pool does not read as idle.
  return `${percent < 1 ? Number(percent.toPrecision(2)) : percent.toFixed(1)}%`;
}

export function formatGiB(bytes: number): string {
  return `${(bytes / GIB).toFixed(1)} GiB`;
}

function formatMoney(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(2);
}

/** Columns padded to their widest cell; the first and `leftAligned` columns left-aligned, the rest right. */
function table(header: string[], rows: string[][], leftAligned: ReadonlySet<number>): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) =>
        i === 0 || leftAligned.has(i) ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** The plan for people: a header, one aligned row per pool, totals, the model, assumptions and notes. */
export function formatPlan(plan: CapacityPlan): string {
  const pct = percentileLabel(plan.percentile);
  const header = [
    'pool',
    plan.whatIf !== 1 ? `arrivals/s ×${plan.whatIf}` : 'arrivals/s',
    'svc mean',
    'svc p95',
    'Cs²',
    'model',
    'replicas',
    'slots',
    'util',
    `wait ${pct}`,
    'needed',
    'util then',
    `wait ${pct} then`,
    'GPU per replica',
    'GPUs',
    'cost/h',
  ];
  const rows = plan.pools.map((p) => [
    p.pool,
    formatRate(p.arrivalPerSec),
    formatMs(p.meanServiceMs),
    formatMs(p.p95ServiceMs),
    Number.isFinite(p.serviceCs2) ? p.serviceCs2.toFixed(2) : '—',
    p.model === 'M/M/c//N' ? `${p.model}=${p.agents}` : p.model,
    String(p.replicas),
    String(p.replicas * p.replicaConcurrency),
    formatShare(p.utilization),
    formatMs(p.waitMs),
    p.neededReplicas === undefined ? '—' : String(p.neededReplicas),
    formatShare(p.utilizationAtNeeded),
    formatMs(p.waitAtNeededMs),
    p.gpu
      ? `${p.gpu.tier ? `${p.gpu.gpusPerReplica > 1 ? `${p.gpu.gpusPerReplica}× ` : ''}${p.gpu.tier}` : 'none fits'} (${formatGiB(p.gpu.memoryPerReplicaBytes)})`
      : '—',
    p.gpu?.gpus === undefined ? '—' : String(p.gpu.gpus),
    formatMoney(p.gpu?.costPerHour),
  ]);
  rows.push([
    'total',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    '',
    String(plan.totalGpus),
    formatMoney(plan.totalCostPerHour),
  ]);
  const lines = [
    `Capacity plan: queue wait ≤ ${formatMs(plan.targetWaitMs)} for ${Number((plan.percentile * 100).toFixed(4))}% of calls` +
      `${plan.whatIf !== 1 ? `, arrivals × ${plan.whatIf} (what-if)` : ''}, rates observed over ${formatMs(plan.windowMs)}`,
    `Model: ${plan.model}`,
    '',
    ...table(header, rows, new Set([5, 13])),
    '',
  ];
  const batched = plan.pools.filter((p) => p.batch);
  if (batched.length > 0) {
    const batchRows = batched.map((p) => {
      const b = p.batch as PoolBatchPlan;
      return [
        p.pool,
        String(b.backlog),
        String(b.queued),
        String(b.inFlight),
        formatRate(b.perReplicaPerSec),
        String(p.replicas),
        formatDuration(b.etaMs),
        formatDuration(b.deadlineMs),
        b.neededReplicas === undefined ? '—' : String(b.neededReplicas),
      ];
    });
    lines.push(
      'Batch backlog (priority low):',
      ...table(
        [
          'pool',
          'backlog',
          'queued',
          'in flight',
          'calls/s per replica',
          'replicas',
          'ETA now',
          'deadline',
          'needed by deadline',
        ],
        batchRows,
        new Set(),
      ),
      '',
    );
  }
  lines.push('Assumptions:', ...plan.assumptions.map((a) => `  - ${a}`));
  const notes = [...plan.pools.flatMap((p) => p.notes), ...plan.notes];
  if (notes.length > 0) lines.push('', 'Notes:', ...notes.map((n) => `  - ${n}`));
  return `${lines.join('\n')}\n`;
}
