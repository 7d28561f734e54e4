// Batch embedding jobs: the engine every ingress replica runs, and the delivery decorator that
// lets workers write chunk results into the job store. Depends on the kernel only.
export { chunkCallId, JOB_ADDRESS_PREFIX } from './chunks.js';
export type { BatchJobsOptions } from './engine.js';
export { createBatchJobs } from './engine.js';
export { batchJobDelivery } from './sink.js';
export type {
  BatchJobs,
  FileView,
  JobFormat,
  JobInput,
  JobItem,
  JobOwner,
  JobStatus,
  JobView,
  SubmitOptions,
} from './types.js';
