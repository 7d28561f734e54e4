/**
 * The NATS JetStream broker: the `CallQueue` on JetStream and the `CancelBus` on core NATS,
 * opened by a `nats://` (or `tls://`) broker URL.
 */
export { openNatsBroker } from './broker.js';
/** The job store on JetStream: records in a KV bucket, blobs in an Object Store. */
export type { NatsJobStoreOptions } from './job-store.js';
export { openNatsJobStore } from './job-store.js';
