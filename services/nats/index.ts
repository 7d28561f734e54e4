/**
 * The NATS JetStream broker: the `CallQueue` on JetStream and the `CancelBus` on core NATS,
 * opened by a `nats://` (or `tls://`) broker URL.
 */
export { openNatsBroker } from './broker.js';
