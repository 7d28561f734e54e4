import type {
  CallSignal,
  Chunk,
  DeliveryChannel,
  DeliveryTransport,
  JobStore,
  Logger,
  OrderReceived,
} from '../core/index.js';
import { chunkOf, completeChunk, failChunk, JOB_ADDRESS_PREFIX } from './chunks.js';
import { readJob, STOPPING } from './record.js';

/**
 * Delivery for workers that also run batch chunks: a call whose `replyTo` is `job:<id>` has no
 * ingress waiting for it, so its "channel" writes the final result into the job store and
 * confirms it like an ingress would (the worker then acks the queue message), and its errors
 * become the chunk's error rows. Until the write is confirmed the worker keeps the message, so a
 * store outage hands the chunk back rather than losing it. When the worker takes a chunk of a
 * job that is being cancelled or has expired, the channel orders it stopped. Every other address
 * goes to `transport`. The worker itself does not know batch jobs exist.
 */
export function batchJobDelivery(
  transport: DeliveryTransport,
  store: JobStore,
  log: Logger,
): DeliveryTransport {
  return {
    kind: transport.kind,
    serve: (options) => transport.serve(options),
    client(options) {
      const inner = transport.client(options);
      const channels = new Map<string, DeliveryChannel>();
      return {
        async channel(address) {
          if (!address.startsWith(JOB_ADDRESS_PREFIX)) return inner.channel(address);
          let channel = channels.get(address);
          if (!channel) {
            channel = jobChannel(address, store, log);
            channels.set(address, channel);
            // One channel per running job; a finished job's channel is cheap and dropped with its watchers.
            if (channels.size > 1024) channels.delete(channels.keys().next().value as string);
          }
          return channel;
        },
        close: () => inner.close(),
      };
    },
  };
}

function jobChannel(address: string, store: JobStore, log: Logger): DeliveryChannel {
  const watchers = new Map<string, (signal: CallSignal) => void>();
  const tell = (callId: string, order: OrderReceived) => watchers.get(callId)?.({ kind: 'order', order });

  const write = (chunk: Chunk, what: () => Promise<void>) => {
    what().then(
      () => tell(chunk.callId, { callId: chunk.callId, delivered: { known: true }, body: 'delivered' }),
      (err: unknown) =>
        // Not confirmed: the worker hands the chunk back after worker.deliveryAckTimeout.
        log.warn('batch chunk result not stored; the chunk will run again', { callId: chunk.callId, err }),
    );
  };

  return {
    address,
    send(chunk) {
      const at = chunkOf(chunk.callId);
      if (!at) {
        log.error('a call for a job address that is no chunk', { callId: chunk.callId, address });
        return true;
      }
      if (chunk.accepted) {
        readJob(store, at.jobId).then(
          (found) => {
            if (!found || STOPPING.has(found.record.status)) {
              tell(chunk.callId, {
                callId: chunk.callId,
                cancel: { reason: found ? found.record.status : 'deleted' },
                body: 'cancel',
              });
            }
          },
          () => undefined, // the store is down: run the chunk; its result is kept once it is back
        );
      } else if (chunk.final) {
        const final = chunk.final;
        write(chunk, async () => {
          const text = final.jsonParts.join('');
          const result = JSON.parse(text) as {
            structuredContent?: { vectors?: number[][] };
            isError?: boolean;
          };
          const vectors = result.structuredContent?.vectors;
          if (result.isError || !Array.isArray(vectors)) {
            await failChunk(store, at.jobId, at.index, { code: 'TOOL_ERROR', message: text.slice(0, 500) });
          } else {
            await completeChunk(store, at.jobId, at.index, vectors);
          }
        });
      } else if (chunk.error) {
        const { code, message } = chunk.error;
        write(chunk, () => failChunk(store, at.jobId, at.index, { code, message }));
      }
      return true;
    },
    watch(callId, listener) {
      watchers.set(callId, listener);
      return () => {
        if (watchers.get(callId) === listener) watchers.delete(callId);
      };
    },
  };
}
