/**
 * The BullMQ broker: the `CallQueue` and `CancelBus` contracts of services/core on Redis.
 * Opened by the composition root for `redis://` and `rediss://` broker URLs.
 */
export { openBullmqBroker } from './broker.js';
