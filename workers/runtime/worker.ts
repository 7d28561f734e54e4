import {
  BROKER_RECONNECT_GRACE_MS,
  type Broker,
  backendsVariable,
  type CallConsumer,
  CallLogGate,
  ClusterError,
  type ClusterErrorCode,
  clusterMetrics,
  createLogger,
  type DeliveryChannel,
  type DeliveryTransport,
  type InputRequiredResult,
  isExpired,
  isRetryable,
  Lifecycle,
  type Logger,
  messagingTargetOf,
  PRIORITIES,
  parseArguments,
  type QueuedCall,
  type ResolvedConfig,
  type RoleServer,
  type Stoppable,
  startRoleServer,
  type ToolCall,
  type ToolResult,
  type ToolTemplate,
  toClusterError,
  toFinal,
} from '../../services/core/index.js';
import { type CallInput, callInputOf, type InputToolAdapter } from './adapter.js';
import { BackendActor } from './backend-actor.js';
import { runWhenAvailable } from './backend-wait.js';
import { AttemptTrace } from './call-trace.js';
import { retryDelayMs, SettleFailures } from './redelivery.js';
import { publishWorkerStatus } from './role-status.js';

/** Options of one worker process serving one pool. */
export interface WorkerOptions {
  config: ResolvedConfig;
  pool: string;
  broker: Broker;
  adapters: Partial<Record<ToolTemplate, InputToolAdapter>>;
  /** Stable id of this worker in logs and `accepted` chunks. */
  workerId: string;
  /** How chunks reach the owning ingress: in-process when it shares this process, gRPC otherwise. */
  delivery: DeliveryTransport;
  /** Serve `/healthz`, `/readyz`, `/metrics` on `config.worker.port`. Default true. */
  serveHttp?: boolean;
}

/** A running worker. */
export interface Worker extends Stoppable {
  readonly pool: string;
  /** Port of the health/metrics server, or 0 when not serving. */
  readonly port: number;
  /** Calls held right now. */
  readonly inFlight: number;
}

/** What the owning ingress said about a final chunk. */
type DeliveryAnswer = 'confirmed' | 'unknown' | 'lost' | 'timeout';

/** How one delivery of a call ended, for its CONSUMER span: the outcome and the error code, if any. */
type Ended = { outcome: string; code?: string };

/** Why a running call was stopped. */
type StopReason = 'cancelled' | 'deadline' | 'lost' | 'shutdown';

interface RunningCall {
  abort: AbortController;
  reason: StopReason | undefined;
  message: QueuedCall;
  /** Last ack-deadline extension (or the start), `performance.now()` milliseconds. */
  beatAtMs: number;
  /** Set while the final chunk waits for the ingress's word. */
  delivered: ((answer: DeliveryAnswer) => void) | undefined;
}

/** Stops a running call's work once; the first reason is the one reported. */
function stopCall(entry: RunningCall, reason: StopReason): void {
  if (entry.reason) return;
  entry.reason = reason;
  entry.abort.abort(new ClusterError('CANCELLED', `stopped: ${reason}`));
}

const ignoreProgress = (): void => {};

/** A log message's `data` as JSON text; what JSON cannot hold (a cycle, a BigInt) goes as its string form. */
function logDataJson(data: unknown): string {
  try {
    return JSON.stringify(data) ?? 'null';
  } catch {
    return JSON.stringify(String(data));
  }
}

/** Back-off after an unexpected failure in the worker itself, in milliseconds. */
const INTERNAL_RETRY_MS = 1000;
/**
 * How long a shutdown waits, after the grace period, for the calls it stopped to be handed back,
 * in milliseconds: a settle waits BROKER_RECONNECT_GRACE_MS for a lost broker, then is abandoned
 * (the broker redelivers the call after its ack wait).
 */
const HAND_BACK_WAIT_MS = BROKER_RECONNECT_GRACE_MS + 1_000;
/**
 * Starts a worker of one pool: pulls calls with bounded in-flight, drops expired ones unrun,
 * routes each to a backend actor, streams progress and the result to the owning ingress over
 * `options.delivery`, and acks only once the ingress confirmed the final chunk (or the call is known dead).
 */
export async function startWorker(options: WorkerOptions): Promise<Worker> {
  const { config, pool, broker, workerId } = options;
  const poolConfig = config.pools[pool];
  if (!poolConfig) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `no pool "${pool}" in the configuration (have: ${Object.keys(config.pools).join(', ')})`,
    );
  }
  if (poolConfig.endpoints.length === 0) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `pool "${pool}" has no backend endpoints (set pools.${pool}.endpoints or ${backendsVariable(pool)})`,
    );
  }
  const tools = new Map(config.tools.filter((t) => t.pool === pool).map((t) => [t.name, t]));
  for (const tool of tools.values()) {
    if (!options.adapters[tool.template])
      throw new ClusterError(
        'INVALID_CONFIG',
        `no adapter for template ${tool.template} (tool ${tool.name})`,
      );
  }
  for (const tool of tools.values()) await options.adapters[tool.template]?.prepare?.(tool);

  const log = createLogger('worker', { pool, worker: workerId });
  const metrics = clusterMetrics();
  // The pool's counters of trouble start at 0, so that their first increment is an increase that
  // `increase()` and `rate()` can see (a series born at 1 shows none, and the dead-letter alert would
  // miss a single dead letter), and so that dashboards chart a healthy pool as 0 rather than nothing.
  for (const priority of PRIORITIES) {
    metrics.workerShed.inc({ pool, priority }, 0);
    metrics.workerRedelivered.inc({ pool, priority }, 0);
    metrics.queueDeadLettered.inc({ pool, priority }, 0);
  }
  const delivery = options.delivery.client({ connectTimeoutMs: config.worker.deliveryConnectTimeoutMs });
  const actors = poolConfig.endpoints.map(
    (endpoint, index) =>
      new BackendActor(
        {
          pool,
          index,
          url: endpoint.url,
          maxConcurrency: endpoint.maxConcurrency,
          healthIntervalMs: poolConfig.healthIntervalMs,
          healthPath: poolConfig.healthPath,
        },
        log,
      ),
  );
  for (const actor of actors) actor.startProbe();
  const maxInFlight =
    poolConfig.maxInFlight ?? poolConfig.endpoints.reduce((sum, e) => sum + e.maxConcurrency, 0);
  const running = new Map<string, RunningCall>();
  const settling = new Set<Promise<void>>();
  const life = new Lifecycle((from, to) => metrics.moveWorkerState(pool, from, to));
  const settleFailures = new SettleFailures(log);
  const messaging = messagingTargetOf(broker.url, config.namespace);

  /** The log of one call; made only when something about the call is logged. */
  const callLog = (call: ToolCall): Logger =>
    log.child({ callId: call.callId, tool: call.tool, attempt: call.attempt });

  const handle = async (message: QueuedCall): Promise<void> => {
    const { call } = message;
    metrics.workerInFlight.inc({ pool });
    metrics.queueDequeued.inc({ pool, priority: call.priority });
    if (call.attempt > 1) metrics.workerRedelivered.inc({ pool, priority: call.priority });
    try {
      await runCall(message);
      settleFailures.confirmed();
    } catch (err) {
      if (err instanceof ClusterError && err.code === 'QUEUE_UNAVAILABLE') {
        // The broker is unreachable: the settle is abandoned and the call redelivered later.
        settleFailures.failed(err);
        return;
      }
      callLog(call).error('call handling failed', { err });
      await message.nack(INTERNAL_RETRY_MS).catch(() => undefined);
    } finally {
      metrics.workerInFlight.dec({ pool });
    }
  };

  const runCall = async (message: QueuedCall): Promise<void> => {
    const takenUnixMs = Date.now();
    const attempt = AttemptTrace.start(message.call, messaging, workerId, takenUnixMs);
    let ended: Ended = { outcome: 'internal', code: 'INTERNAL' };
    try {
      ended = await runAttempt(message, takenUnixMs, attempt);
    } finally {
      attempt.end(ended.outcome, ended.code);
    }
  };

  const runAttempt = async (
    message: QueuedCall,
    takenUnixMs: number,
    attempt: AttemptTrace,
  ): Promise<Ended> => {
    const { call } = message;
    const tool = tools.get(call.tool);
    if (!tool) {
      callLog(call).error('call for a tool this pool does not serve');
      await sendTerminalError(call, 'INVALID_ARGUMENTS', `pool ${pool} does not serve tool ${call.tool}`);
      await message.term('unknown tool');
      return { outcome: 'rejected', code: 'INVALID_ARGUMENTS' };
    }
    if (isExpired(call)) {
      // Shed: the caller has already been answered with a timeout; running it would waste a GPU.
      metrics.workerShed.inc({ pool, priority: call.priority });
      callLog(call).info('shed: deadline passed before dispatch');
      await message.term('expired');
      return { outcome: 'shed', code: 'DEADLINE_EXCEEDED' };
    }
    let args: Record<string, unknown>;
    let input: CallInput;
    try {
      // The one parse of the arguments on their way from the caller to the adapter.
      args = parseArguments(call.argumentsJson);
      input = callInputOf(call);
    } catch (err) {
      callLog(call).error('call arguments do not parse', { err });
      await sendTerminalError(call, 'INVALID_ARGUMENTS', `the call's arguments are not a JSON object`);
      await message.term('bad arguments');
      return { outcome: 'rejected', code: 'INVALID_ARGUMENTS' };
    }
    metrics.queueWait.observe({ pool }, Math.max(0, takenUnixMs - call.enqueuedUnixMs) / 1000);
    let batchWaitMs = 0;

    let channel: DeliveryChannel;
    try {
      channel = await delivery.channel(call.replyTo);
    } catch (err) {
      metrics.workerUndeliverable.inc({ pool });
      callLog(call).warn('owning ingress unreachable; dropping the call', { err, replyTo: call.replyTo });
      await message.term('undeliverable');
      return { outcome: 'lost', code: 'UNDELIVERABLE' };
    }

    const lastAttempt = call.attempt >= config.worker.maxDeliveries;
    // How long this delivery may wait here for a backend: its back-off, or on the last delivery
    // until the deadline, so a backend outage never spends a call's last delivery.
    const waitUntilUnixMs = lastAttempt ? call.deadlineUnixMs : Date.now() + retryDelayMs(call.attempt);

    const entry: RunningCall = {
      abort: new AbortController(),
      reason: undefined,
      message,
      beatAtMs: performance.now(),
      delivered: undefined,
    };
    // Keyed by delivery, not call id: a call handed back (nack 0) can be delivered again to this
    // worker before the previous attempt's cleanup ran, and that cleanup must not drop it.
    const runKey = `${call.callId}#${call.attempt}`;
    running.set(runKey, entry);
    const unwatch = channel.watch(call.callId, (signal) => {
      if (signal.kind === 'lost') {
        stopCall(entry, 'lost');
        entry.delivered?.('lost');
      } else if (signal.order.body === 'cancel') {
        stopCall(entry, 'cancelled');
      } else if (signal.order.body === 'delivered') {
        entry.delivered?.(signal.order.delivered?.known ? 'confirmed' : 'unknown');
      }
    });
    const deadlineTimer = setTimeout(
      stopCall,
      Math.max(0, call.deadlineUnixMs - Date.now()),
      entry,
      'deadline' satisfies StopReason,
    );

    // Filtered here, so a call whose caller asked for no logs (or not at that level) sends none.
    const logGate = new CallLogGate(call.logLevel);
    try {
      channel.send({ callId: call.callId, attempt: call.attempt, accepted: { workerId } });
      let started: number | undefined;
      let outcome: { result: ToolResult | InputRequiredResult } | { error: ClusterError } | undefined;
      try {
        const adapter = options.adapters[tool.template] as InputToolAdapter;
        // Held in `running` meanwhile: heartbeats keep the delivery alive, cancels reach it.
        const ran = await runWhenAvailable(
          actors,
          call.sessionKey,
          { untilUnixMs: waitUntilUnixMs, signal: entry.abort.signal },
          (actor) =>
            actor.run((endpointUrl) => {
              const startedMs = performance.now();
              started = startedMs;
              return attempt.runBackend(endpointUrl, poolConfig.backend, startedMs, () =>
                adapter.run({
                  call,
                  arguments: args,
                  input,
                  tool,
                  endpointUrl,
                  backend: poolConfig.backend,
                  signal: entry.abort.signal,
                  backendTimeoutMs: poolConfig.backendTimeoutMs,
                  noteBatchWait: (ms) => {
                    batchWaitMs = ms;
                  },
                  progress: call.wantsProgress
                    ? (p) => {
                        channel.send({
                          callId: call.callId,
                          attempt: call.attempt,
                          progress: { progress: p.progress, total: p.total ?? 0, message: p.message ?? '' },
                        });
                      }
                    : ignoreProgress,
                  log: (level, data, logger) => {
                    if (!logGate.admit(level)) return;
                    channel.send({
                      callId: call.callId,
                      attempt: call.attempt,
                      log: { level, logger: logger ?? '', dataJson: logDataJson(data) },
                    });
                  },
                }),
              );
            }),
        );
        outcome = ran;
      } catch (err) {
        outcome = { error: toClusterError(err) };
      }
      const backendMs = started === undefined ? 0 : performance.now() - started;
      if (started !== undefined) {
        metrics.backendDuration.observe({ pool, tool: tool.name }, backendMs / 1000);
        metrics.backendDurationSquared.inc({ pool, tool: tool.name }, (backendMs / 1000) ** 2);
        attempt.endBackend(
          started,
          backendMs,
          batchWaitMs,
          outcome && 'error' in outcome ? outcome.error.code : undefined,
        );
      }

      if (entry.reason) {
        // The work was stopped from outside; the caller has its answer or is gone.
        metrics.workerCalls.inc({ pool, tool: tool.name, outcome: entry.reason });
        if (entry.reason === 'lost') metrics.workerUndeliverable.inc({ pool });
        if (entry.reason === 'shutdown') await message.nack(0);
        else await message.term(entry.reason);
        return {
          outcome: entry.reason,
          code: entry.reason === 'deadline' ? 'DEADLINE_EXCEEDED' : 'CANCELLED',
        };
      }
      if (!outcome && !lastAttempt) {
        // No backend came back within this delivery's back-off, waited here: hand the call back
        // at once, for a worker whose backend may be up.
        await message.nack(0);
        return { outcome: 'retried', code: 'BACKEND_UNAVAILABLE' };
      }
      if (!outcome) {
        outcome = {
          error: new ClusterError(
            'BACKEND_UNAVAILABLE',
            `no backend of pool ${pool} was available before the call's deadline, after ${call.attempt} deliveries; retry later`,
          ),
        };
      }
      if ('error' in outcome && isRetryable(outcome.error.code) && !lastAttempt && !isExpired(call)) {
        // Another worker (or this one, once the backend recovers) may succeed: give it back.
        callLog(call).warn('backend failed; handing the call back', { err: outcome.error });
        metrics.workerCalls.inc({ pool, tool: tool.name, outcome: 'retried' });
        await message.nack(retryDelayMs(call.attempt));
        return { outcome: 'retried', code: outcome.error.code };
      }
      const timing = {
        queueWaitMs: Math.max(0, takenUnixMs - call.enqueuedUnixMs),
        backendMs,
        batchWaitMs,
        sentUnixMs: Date.now(),
      };
      const wait = new Promise<DeliveryAnswer>((resolve) => {
        const timer = setTimeout(resolve, config.worker.deliveryAckTimeoutMs, 'timeout');
        entry.delivered = (answer) => {
          clearTimeout(timer);
          resolve(answer);
        };
      });
      attempt.delivering(call.replyTo);
      const notice = logGate.droppedNotice();
      if (notice) {
        const { level, logger = '', data } = notice;
        channel.send({
          callId: call.callId,
          attempt: call.attempt,
          log: { level, logger, dataJson: logDataJson(data) },
        });
      }
      if ('result' in outcome) {
        // Media as raw bytes, `_meta` apart: the ingress splices its timing in without parsing.
        channel.send({ callId: call.callId, attempt: call.attempt, final: toFinal(outcome.result), timing });
      } else {
        channel.send({
          callId: call.callId,
          attempt: call.attempt,
          error: { code: outcome.error.code, message: outcome.error.message },
          timing,
        });
      }
      const answer = await wait;
      attempt.delivered(answer);
      metrics.workerCalls.inc({ pool, tool: tool.name, outcome: 'result' in outcome ? 'ok' : 'tool_error' });
      switch (answer) {
        case 'confirmed':
        case 'unknown':
          // Delivered, or nobody waits any more: either way the call is finished.
          await message.ack();
          break;
        case 'lost':
          metrics.workerUndeliverable.inc({ pool });
          await message.term('undeliverable');
          break;
        case 'timeout':
          // No confirmation: the answer may not have arrived, so let the call run again.
          callLog(call).warn('ingress did not confirm the final chunk; handing the call back');
          await message.nack(0);
          break;
      }
      return 'result' in outcome
        ? { outcome: 'isError' in outcome.result && outcome.result.isError ? 'tool_error' : 'ok' }
        : { outcome: 'tool_error', code: outcome.error.code };
    } finally {
      clearTimeout(deadlineTimer);
      unwatch();
      running.delete(runKey);
    }
  };

  // One heartbeat timer for every running call, not one per call: each tick extends the ack
  // deadline of the calls that went half an interval without one, so none goes a whole
  // interval (a third of the ack wait) without.
  const heartbeatMs = Math.max(250, config.worker.ackWaitMs / 3);
  const heartbeat = setInterval(() => {
    const due = performance.now() - heartbeatMs / 2;
    for (const entry of running.values()) {
      if (entry.beatAtMs > due) continue;
      entry.beatAtMs = performance.now();
      entry.message.inProgress().catch(() => undefined);
    }
  }, heartbeatMs / 2);
  heartbeat.unref();

  const sendTerminalError = async (call: ToolCall, code: ClusterErrorCode, text: string) => {
    try {
      const channel = await delivery.channel(call.replyTo);
      channel.send({ callId: call.callId, attempt: call.attempt, error: { code, message: text } });
    } catch (err) {
      callLog(call).warn('could not report the error to the ingress', { err });
    }
  };

  const onMessage = (message: QueuedCall) => {
    const work = handle(message);
    settling.add(work);
    void work.finally(() => settling.delete(work));
  };
  const settings = { ackWaitMs: config.worker.ackWaitMs, maxDeliveries: config.worker.maxDeliveries };
  // Two consumers: interactive calls (high, normal) get the worker's whole room; batch chunks
  // (low) get a few slots of their own, enough to keep the backend busy between interactive
  // calls but never so many that interactive calls wait behind a worker full of chunks.
  let consumers: CallConsumer[] | undefined = [
    broker.queue.consume(pool, { ...settings, maxInFlight, priorities: ['high', 'normal'] }, onMessage),
    broker.queue.consume(
      pool,
      { ...settings, maxInFlight: config.worker.batchInFlight, priorities: ['low'] },
      onMessage,
    ),
  ];
  life.started();

  let http: RoleServer | undefined;
  if (options.serveHttp !== false) {
    http = await startRoleServer({
      host: config.worker.host,
      port: config.worker.port,
      portSetting: '--port or worker.port',
      lifecycle: life,
      readiness: async () => {
        const brokerReady = await broker.queue.ready().catch(() => false);
        const healthyBackends = actors.filter((a) => a.isHealthy).length;
        return { ready: brokerReady && healthyBackends > 0, broker: brokerReady, healthyBackends };
      },
      // This worker holds its pool's queue, so it reports the queue figures too.
      refreshMetrics: () => metrics.refreshQueueGauges(broker.queue, [pool]),
      onError: (err) => log.error('http request failed', { err }),
    });
  }
  const port = http?.port ?? 0;
  // What the status page of any ingress shows of this worker and its backends.
  const roleStatus = publishWorkerStatus({
    ledger: broker.roles,
    worker: workerId,
    pool,
    actors,
    maxInFlight,
    state: () => life.state,
    inFlight: () => running.size,
    log,
  });
  log.info('worker started', { maxInFlight, backends: poolConfig.endpoints.map((e) => e.url), port });

  return {
    pool,
    port,
    get state() {
      return life.state;
    },
    get inFlight() {
      return running.size;
    },
    shutdown: () => life.shutdown({ drain, close }),
  };

  async function drain(): Promise<void> {
    log.info('draining', { inFlight: running.size });
    void roleStatus.publish();
    await Promise.all((consumers ?? []).map((c) => c.stop()));
    consumers = undefined;
    // Running calls get the grace period to finish; the rest are handed back to the queue.
    const grace = new Promise((resolve) => setTimeout(resolve, config.worker.drainGraceMs).unref());
    await Promise.race([Promise.allSettled([...settling]), grace]);
    for (const entry of running.values()) {
      if (!entry.reason) {
        entry.reason = 'shutdown';
        entry.abort.abort(new ClusterError('SHUTTING_DOWN', 'worker shutting down'));
      }
    }
    // Bounded: a hand-back the broker cannot take is abandoned (redelivered after the ack wait).
    const handedBack = await Promise.race([
      Promise.allSettled([...settling]).then(() => true),
      new Promise<false>((resolve) => setTimeout(resolve, HAND_BACK_WAIT_MS, false).unref()),
    ]);
    if (!handedBack) {
      log.warn('calls not handed back in time; the broker redelivers them after their ack wait', {
        calls: settling.size,
      });
    }
  }

  async function close(): Promise<void> {
    clearInterval(heartbeat);
    // Gone from the status page at once, rather than after the entry's TTL.
    await roleStatus.stop();
    for (const actor of actors) actor.stop();
    await delivery.close();
    await http?.close();
    log.info('worker stopped');
  }
}
