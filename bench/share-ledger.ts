/**
 * `npm run bench -- share-ledger [--broker URL,...] [--replicas 3] [--tenants 20] [--rounds 400]`:
 * what the shares ledger costs each ingress replica. R replicas publish their admission entry (one
 * per publish period in the cluster, PUBLISH_INTERVAL_MS) and read every live entry, round after
 * round, on each broker (default the machine's NATS and Redis): per-operation latency (p50, p99)
 * and this process's CPU per operation. The entries are real ones, built by the admission with
 * `--tenants` tenants active on two pools, so their size is what a replica publishes.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { openBroker } from '../services/cli/index.js';
import { Admission, ENTRY_TTL_MS } from '../services/ingress/index.js';
import { runIfMain } from './main.js';

/** A replica's entry with `tenants` tenants busy on two pools: calls queued, held and in flight. */
export function sampleEntry(tenants: number): unknown {
  const admission = new Admission({
    tenants: {},
    fairQueueSizes: { inference: 16384, embeddings: 2048 },
    tenantLabel: (t) => t,
  });
  for (let i = 0; i < tenants; i++) {
    for (const pool of ['inference', 'embeddings']) {
      for (let c = 0; c < 3; c++) {
        admission.admit({ tenant: `tenant-${i}`, pool, cost: 700, deadlineUnixMs: Date.now() + 60_000 });
      }
    }
  }
  admission.tick();
  return admission.entry();
}

interface LedgerFigures {
  broker: string;
  replicas: number;
  entryBytes: number;
  publishP50Ms: number;
  publishP99Ms: number;
  readP50Ms: number;
  readP99Ms: number;
  /** CPU time (user + system) of this process per publish plus read, in microseconds. */
  cpuUsPerRound: number;
}

async function measure(
  url: string,
  replicas: number,
  tenants: number,
  rounds: number,
): Promise<LedgerFigures> {
  const namespace = `ledger${process.pid}${Date.now() % 100000}`;
  const brokers = await Promise.all(
    Array.from({ length: replicas }, () =>
      openBroker({ url, namespace, pools: ['inference', 'embeddings'] }),
    ),
  );
  const entry = sampleEntry(tenants);
  const histogram = () =>
    build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 60_000_000,
      numberOfSignificantValueDigits: 3,
    });
  const publishes = histogram();
  const reads = histogram();
  const ids = brokers.map((_, i) => `replica-${i}`);
  try {
    // One round first, unmeasured: connections, buckets and watches are set up on first use.
    await Promise.all(brokers.map((b, i) => b.shares.publish(ids[i] as string, entry, ENTRY_TTL_MS)));
    await Promise.all(brokers.map((b) => b.shares.read()));
    const cpuBefore = process.cpuUsage();
    for (let r = 0; r < rounds; r++) {
      const i = r % replicas;
      const broker = brokers[i];
      if (!broker) continue;
      let t = performance.now();
      await broker.shares.publish(ids[i] as string, entry, ENTRY_TTL_MS);
      publishes.recordValue(Math.max(1, Math.round((performance.now() - t) * 1000)));
      t = performance.now();
      const live = await broker.shares.read();
      reads.recordValue(Math.max(1, Math.round((performance.now() - t) * 1000)));
      if (live.size !== replicas) throw new Error(`read ${live.size} entries, expected ${replicas}`);
    }
    const cpu = process.cpuUsage(cpuBefore);
    const ms = (h: ReturnType<typeof histogram>, q: number) => h.getValueAtPercentile(q) / 1000;
    return {
      broker: url,
      replicas,
      entryBytes: Buffer.byteLength(JSON.stringify(entry)),
      publishP50Ms: ms(publishes, 50),
      publishP99Ms: ms(publishes, 99),
      readP50Ms: ms(reads, 50),
      readP99Ms: ms(reads, 99),
      cpuUsPerRound: (cpu.user + cpu.system) / rounds,
    };
  } finally {
    await Promise.all(brokers.map((b, i) => b.shares.withdraw(ids[i] as string)));
    await Promise.all(brokers.map((b) => b.close()));
  }
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      broker: { type: 'string', default: 'nats://127.0.0.1:4222,redis://127.0.0.1:6379' },
      replicas: { type: 'string', default: '3' },
      tenants: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '400' },
    },
    strict: true,
  });
  const replicas = Number(values.replicas);
  const tenants = Number(values.tenants);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 16)
    throw new Error(`--replicas takes a whole number 1..16, got "${values.replicas}"`);
  if (!Number.isInteger(tenants) || tenants < 0)
    throw new Error(`--tenants takes a whole number, got "${values.tenants}"`);
  if (!Number.isInteger(rounds) || rounds < 10)
    throw new Error(`--rounds takes a whole number >= 10, got "${values.rounds}"`);
  const lines = [
    `## Shares ledger: ${replicas} replicas, entries of ${tenants} tenants on 2 pools, ${rounds} rounds`,
    '',
    '| broker | entry bytes | publish p50 / p99 ms | read p50 / p99 ms | CPU per publish + read us |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const url of values.broker.split(',')) {
    const f = await measure(url.trim(), replicas, tenants, rounds);
    lines.push(
      `| ${f.broker} | ${f.entryBytes} | ${f.publishP50Ms.toFixed(2)} / ${f.publishP99Ms.toFixed(2)} | ${f.readP50Ms.toFixed(2)} / ${f.readP99Ms.toFixed(2)} | ${f.cpuUsPerRound.toFixed(0)} |`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

runIfMain(import.meta.url, 'share-ledger', main);
