import { queueLog } from '../core/index.js';

/** The event log of the BullMQ queue and its cancel bus (component `queue.bullmq`). */
export const logEvent = queueLog('queue.bullmq');
