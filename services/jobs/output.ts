import type { JobStore } from '../core/index.js';
import { chunkError, chunkInput, chunkOutput, hasBit, type JobRecord, rowsOf } from './record.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Lines buffered into one yielded piece of a file, so a download is not a write per row. */
const ROWS_PER_PIECE = 256;

/**
 * The job's output file: one JSONL row per completed input item, in input order, each with its
 * id (`id` in the plain format, `custom_id` in the OpenAI format). Assembled chunk by chunk from
 * the stored float32 vectors, so memory stays at one chunk whatever the job's size. A chunk is
 * read only once its bit says completed, so each row appears exactly once.
 */
export async function* outputRows(store: JobStore, job: JobRecord): AsyncGenerator<Uint8Array> {
  let rowNumber = 0;
  for (let i = 0; i < job.chunkCount; i++) {
    if (!hasBit(job.done, i)) {
      rowNumber += rowsOf(job, i);
      continue;
    }
    const [input, output] = await Promise.all([
      store.getBlob(chunkInput(job.id, i)),
      store.getBlob(chunkOutput(job.id, i)),
    ]);
    if (!input || !output) continue; // deleted (retention) while being read
    const { ids } = JSON.parse(decoder.decode(input)) as { ids: string[] };
    const floats = new Float32Array(
      output.buffer.slice(output.byteOffset, output.byteOffset + output.byteLength),
    );
    const dimensions = ids.length > 0 ? floats.length / ids.length : 0;
    // Yielded in pieces of ROWS_PER_PIECE rows; the caller writes each as it comes.
    let piece = '';
    for (let row = 0; row < ids.length; row++) {
      const vector = Array.from(floats.subarray(row * dimensions, (row + 1) * dimensions), shortest);
      piece += `${outputLine(job, ids[row] as string, vector, rowNumber++, i)}\n`;
      if ((row + 1) % ROWS_PER_PIECE === 0) {
        yield encoder.encode(piece);
        piece = '';
      }
    }
    if (piece) yield encoder.encode(piece);
  }
}

/** The job's error file: one row per failed input item, in input order, with the chunk's error. */
export async function* errorRows(store: JobStore, job: JobRecord): AsyncGenerator<Uint8Array> {
  let rowNumber = 0;
  for (let i = 0; i < job.chunkCount; i++) {
    if (!hasBit(job.failed, i)) {
      rowNumber += rowsOf(job, i);
      continue;
    }
    const [input, failure] = await Promise.all([
      store.getBlob(chunkInput(job.id, i)),
      store.getBlob(chunkError(job.id, i)),
    ]);
    if (!input || !failure) continue;
    const { ids } = JSON.parse(decoder.decode(input)) as { ids: string[] };
    const error = JSON.parse(decoder.decode(failure)) as { code: string; message: string };
    let piece = '';
    for (const id of ids) piece += `${errorLine(job, id, error, rowNumber++)}\n`;
    yield encoder.encode(piece);
  }
}

function outputLine(job: JobRecord, id: string, vector: number[], row: number, chunk: number): string {
  if (job.format === 'plain') return JSON.stringify({ id, embedding: vector });
  return JSON.stringify({
    id: requestId(job, row),
    custom_id: id,
    response: {
      status_code: 200,
      request_id: `${job.id}.${chunk}`,
      body: {
        object: 'list',
        data: [{ object: 'embedding', index: 0, embedding: vector }],
        model: job.model,
        usage: { prompt_tokens: 0, total_tokens: 0 },
      },
    },
    error: null,
  });
}

function errorLine(
  job: JobRecord,
  id: string,
  error: { code: string; message: string },
  row: number,
): string {
  if (job.format === 'plain') return JSON.stringify({ id, error });
  return JSON.stringify({ id: requestId(job, row), custom_id: id, response: null, error });
}

const requestId = (job: JobRecord, row: number) => `batch_req_${job.id.slice('batch_'.length)}_${row}`;

/** A float32 written with the 9 significant digits that read back as the same float32. */
function shortest(value: number): number {
  return Number(value.toPrecision(9));
}
