/**
 * The pool runtime: consumer loop, backend actors, router and delivery to the ingress.
 * Tool families (inference, embeddings) plug in as adapters.
 */

export type {
  AdapterContext,
  CallInput,
  InputRequiredResult,
  InputToolAdapter,
  ToolAdapter,
  ToolProgress,
  ToolResult,
} from './adapter.js';
export { callInputOf } from './adapter.js';
export type { BackendActorOptions } from './backend-actor.js';
export { BackendActor } from './backend-actor.js';
export type { BackendRequestInit, BackendResponse } from './backend-http.js';
export {
  BACKEND_IDLE_SOCKET_MS,
  BACKEND_MAX_FREE_SOCKETS,
  BACKEND_MAX_SOCKETS,
  BackendRefusal,
  backendRequest,
  postJson,
  readJson,
  readSse,
} from './backend-http.js';
export { retryDelayMs } from './redelivery.js';
export type { BackendView } from './router.js';
export { AFFINITY_LOAD_FACTOR, pickBackend, rendezvousOrder } from './router.js';
export type { Worker, WorkerOptions } from './worker.js';
export { startWorker } from './worker.js';
