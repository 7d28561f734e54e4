/**
 * The gRPC Delivery transport: the ingress serves `mcpcluster.v1.Delivery/Connect`, each worker
 * keeps one bidirectional stream per ingress replica. For roles in separate processes; the
 * composition root (services/cli) picks it.
 */
import { DeliveryChannels, type DeliveryTransport } from '../core/index.js';
import { openGrpcChannel } from './client.js';
import { serveGrpc } from './server.js';

/** Where a gRPC delivery server listens, and what it tells workers. */
export interface GrpcDeliveryOptions {
  /** Interface to bind. Default `127.0.0.1`. */
  host?: string;
  /** Port to bind; 0 picks a free one. Default 0. */
  port?: number;
  /**
   * `host:port` workers reach the server at, when the bound address is not it (behind NAT, a
   * Kubernetes pod's DNS name). Default: the bound `host:port`.
   */
  advertise?: string;
}

/**
 * Delivery over gRPC. A server's `ServeOptions.listen` (`host:port`) overrides `host` and `port`.
 * Addresses are `host:port`; an unreachable one fails with UNDELIVERABLE after the client's
 * connect timeout.
 */
export function grpcDelivery(options: GrpcDeliveryOptions = {}): DeliveryTransport {
  return {
    kind: 'grpc',
    serve: (serve) => {
      const listen = serve.listen ? splitHostPort(serve.listen) : undefined;
      return serveGrpc({
        ...serve,
        host: listen?.host ?? options.host ?? '127.0.0.1',
        port: listen?.port ?? options.port ?? 0,
        advertise: options.advertise,
      });
    },
    client: (clientOptions) => new DeliveryChannels(clientOptions, openGrpcChannel),
  };
}

function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}
