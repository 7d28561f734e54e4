import {
  ProtocolError,
  ProtocolErrorCode,
  ResourceNotFoundError,
  type ServerContext,
} from '@modelcontextprotocol/server';
import { ClusterError } from '../core/index.js';
import type { BatchJobs } from '../jobs/types.js';
import { identityOf } from './auth/index.js';

/**
 * A family of resources served beside the catalog's: what it answers `resources/read` for, and
 * the template `resources/templates/list` names it by.
 */
export interface ResourceSource {
  /** Listed by `resources/templates/list`. */
  readonly template: { uriTemplate: string; name: string; description: string; mimeType?: string };
  /** Whether `uri` is one of this source's (it then answers it, found or not). */
  owns(uri: string): boolean;
  /** The resource's contents (text, or base64 `blob`) for the caller of `ctx`; rejects with a resource-not-found error. */
  read(
    uri: string,
    ctx: ServerContext,
  ): Promise<
    { uri: string; mimeType: string; text: string } | { uri: string; mimeType: string; blob: string }
  >;
}

/** URI prefix of batch files as MCP resources. */
export const FILE_URI_PREFIX = 'mcp-cluster://files/';

/** The MCP resource URI of a batch file (input, output or error rows). */
export function fileUri(fileId: string): string {
  return `${FILE_URI_PREFIX}${encodeURIComponent(fileId)}`;
}

/** A `resource_link` content block to a batch file, readable with `resources/read` at any replica. */
export function fileLink(fileId: string, name: string, description: string) {
  return { type: 'resource_link', uri: fileUri(fileId), name, description, mimeType: 'application/jsonl' };
}

/** The largest file `resources/read` returns whole, in bytes (16 MiB); larger ones are read with the Batch API. */
export const MAX_FILE_READ_BYTES = 16 * 1024 * 1024;

/**
 * Batch files as resources: `mcp-cluster://files/{file_id}` reads a batch job's input, output or
 * error file (JSONL) from the job store on the broker, so any replica answers it, for the caller's
 * tenant only (another tenant's file reads as not found). `embed_batch` results link their files
 * with `resource_link` blocks. Files over `maxBytes` are refused with a pointer to the Batch API's
 * `GET /v1/files/{file_id}/content`, which streams them.
 */
export function createFileResources(jobs: BatchJobs, maxBytes = MAX_FILE_READ_BYTES): ResourceSource {
  const notFound = (uri: string) =>
    new ResourceNotFoundError(uri, `no batch file "${uri}" for this caller's tenant`);
  return {
    template: {
      uriTemplate: `${FILE_URI_PREFIX}{file_id}`,
      name: 'batch-file',
      description: "A batch job's input, output or error file (JSONL), by file id",
      mimeType: 'application/jsonl',
    },
    owns: (uri) => uri.startsWith(FILE_URI_PREFIX),
    async read(uri, ctx) {
      let fileId: string;
      try {
        fileId = decodeURIComponent(uri.slice(FILE_URI_PREFIX.length));
      } catch {
        throw notFound(uri);
      }
      if (!/^[A-Za-z0-9_-]{1,128}$/.test(fileId)) throw notFound(uri);
      const { tenant, principal } = identityOf(ctx.http?.authInfo);
      const owner = { tenant, principal };
      const parts: Uint8Array[] = [];
      let size = 0;
      try {
        await jobs.getFile(owner, fileId);
        for await (const part of jobs.fileContent(owner, fileId)) {
          size += part.byteLength;
          if (size > maxBytes)
            throw new ProtocolError(
              ProtocolErrorCode.InvalidParams,
              `batch file ${fileId} is over ${maxBytes} bytes; read it with GET /v1/files/${fileId}/content`,
            );
          parts.push(part);
        }
      } catch (err) {
        if (err instanceof ClusterError && err.code === 'UNKNOWN_JOB') throw notFound(uri);
        throw err;
      }
      return { uri, mimeType: 'application/jsonl', text: Buffer.concat(parts).toString('utf8') };
    },
  };
}
