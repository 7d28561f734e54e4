import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  assertStoreName,
  assertStorePrefix,
  type JobStore,
  type JobStoreOptions,
  type StoredRecord,
} from './job-store.js';

/**
 * The job store of the embedded cluster (`memory:`): records in a map, blobs in the heap or, with
 * `directory`, as files there (a million embeddings are gigabytes of float32). Lives as long as
 * the process, like the memory queue it goes with.
 */
export function openMemoryJobStore(options: Pick<JobStoreOptions, 'directory'> = {}): JobStore {
  const records = new Map<string, StoredRecord>();
  // One counter for every key, like a stream sequence: a re-created key never reuses a revision.
  let lastRevision = 0;
  const heapBlobs = new Map<string, Uint8Array>();
  const dir = options.directory;
  if (dir) mkdirSync(dir, { recursive: true });
  const withPrefix = (names: Iterable<string>, prefix: string) =>
    [...names].filter((n) => n.startsWith(prefix));

  return {
    kind: 'memory',
    async get(key) {
      assertStoreName(key);
      const found = records.get(key);
      return found ? { value: found.value, revision: found.revision } : undefined;
    },
    async create(key, value) {
      assertStoreName(key);
      if (records.has(key)) return false;
      records.set(key, { value: Uint8Array.from(value), revision: ++lastRevision });
      return true;
    },
    async update(key, value, revision) {
      assertStoreName(key);
      const found = records.get(key);
      if (!found || found.revision !== revision) return false;
      const next = ++lastRevision;
      records.set(key, { value: Uint8Array.from(value), revision: next });
      return next;
    },
    async delete(key) {
      assertStoreName(key);
      records.delete(key);
    },
    async keys(prefix) {
      assertStorePrefix(prefix);
      return withPrefix(records.keys(), prefix);
    },
    async putBlob(name, bytes) {
      assertStoreName(name);
      if (dir) writeFileSync(join(dir, name), bytes);
      else heapBlobs.set(name, Uint8Array.from(bytes));
    },
    async getBlob(name) {
      assertStoreName(name);
      if (!dir) return heapBlobs.get(name);
      try {
        return new Uint8Array(readFileSync(join(dir, name)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },
    async deleteBlob(name) {
      assertStoreName(name);
      if (dir) rmSync(join(dir, name), { force: true });
      else heapBlobs.delete(name);
    },
    async blobNames(prefix) {
      assertStorePrefix(prefix);
      return withPrefix(dir ? readdirSync(dir) : heapBlobs.keys(), prefix);
    },
    async close() {},
  };
}
