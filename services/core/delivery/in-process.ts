import { ClusterError } from '../errors.js';
import type { DeliveryServer, DeliveryTransport, ServeOptions } from './delivery.js';
import { DeliveryChannels, IngressLink, WorkerChannel } from './links.js';
import { receivedChunk, receivedOrder } from './messages.js';

/** One worker's link to an in-process server: both ends. */
interface Link {
  ingress: IngressLink;
  worker: WorkerChannel;
}

/**
 * Delivery between roles of one process (`mcp-cluster up`, tests): the linked pair, as the memory
 * queue is for `CallQueue`. Servers register under `inproc:ingress-<n>` in this transport
 * object; a worker's channel is linked to the server directly and chunks and orders travel as
 * objects, each handed over in a microtask (so, as over a wire, a send never runs the other side
 * inside the sender, and the order of sends is kept).
 *
 * An address with no server fails with UNDELIVERABLE at once, not after the connect timeout: a
 * name is never reused by itself, so waiting could not make it appear. Closing a server breaks
 * its links: their workers hear `lost`.
 */
export function inProcessDelivery(): DeliveryTransport {
  const servers = new Map<string, (onBroken: () => void) => WorkerChannel>();
  let named = 0;

  const serve = async (options: ServeOptions): Promise<DeliveryServer> => {
    const address = options.listen ?? `inproc:ingress-${++named}`;
    if (servers.has(address)) {
      throw new ClusterError('INVALID_CONFIG', `cannot serve delivery on ${address}: already in use`);
    }
    const links = new Set<Link>();
    let drained: (() => void) | undefined;
    let closing: Promise<void> | undefined;

    const connect = (onBroken: () => void): WorkerChannel => {
      const ingress = new IngressLink((order) => {
        queueMicrotask(() => worker.receive(receivedOrder(order)));
      }, options.onLinkClosed);
      const worker: WorkerChannel = new WorkerChannel(
        address,
        {
          write: (chunk) => {
            queueMicrotask(() => {
              if (!ingress.closed) options.onChunk(receivedChunk(chunk), ingress);
            });
          },
          // The worker closed its end (or the server broke it): the ingress hears it after the
          // chunks already sent.
          end: () => {
            links.delete(link);
            if (links.size === 0) drained?.();
            queueMicrotask(() => ingress.finish());
          },
        },
        onBroken,
      );
      const link: Link = { ingress, worker };
      links.add(link);
      return worker;
    };
    servers.set(address, connect);

    const close = async (graceMs: number): Promise<void> => {
      servers.delete(address);
      if (links.size > 0) {
        await new Promise<void>((resolve) => {
          const force = setTimeout(resolve, graceMs);
          drained = () => {
            clearTimeout(force);
            resolve();
          };
        });
      }
      for (const link of [...links]) {
        link.ingress.finish();
        link.worker.lose();
      }
    };
    return {
      address,
      close: (graceMs = 1000) => {
        closing ??= close(graceMs);
        return closing;
      },
    };
  };

  return {
    kind: 'in-process',
    serve,
    client: (options) =>
      new DeliveryChannels(options, async (address, _connectTimeoutMs, onBroken) => {
        const connect = servers.get(address);
        if (!connect) {
          throw new ClusterError(
            'UNDELIVERABLE',
            `no in-process ingress replica at ${address} (it has stopped, or belongs to another process)`,
          );
        }
        return connect(onBroken);
      }),
  };
}
