/**
 * The BullMQ broker: the `CallQueue` and `CancelBus` contracts of services/core on Redis.
 * Opened by the composition root for `redis://` and `rediss://` broker URLs.
 */
export { openBullmqBroker } from './broker.js';
/** The job store on the same Redis: records as hashes with Lua compare-and-set, blobs as strings. */
export { openRedisJobStore } from './job-store.js';
