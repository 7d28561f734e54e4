/**
 * Runs one simulated vLLM backend as a process:
 *   node dist/workers/sim/main.js --port 8000 --ttft-ms 20 --max-num-seqs 16
 * Prints one JSON line `{"sim":"listening","url":…}` once it accepts connections, and stops on
 * SIGTERM or SIGINT.
 */

import { parseSimArgs, startSimBackend } from './index.js';

async function main(): Promise<void> {
  let backend: Awaited<ReturnType<typeof startSimBackend>>;
  try {
    backend = await startSimBackend(parseSimArgs(process.argv.slice(2)));
  } catch (err) {
    process.stderr.write(
      `${JSON.stringify({ sim: 'error', message: err instanceof Error ? err.message : String(err) })}\n`,
    );
    // 2 for bad usage (flags), as most command-line tools do.
    process.exitCode = 2;
    return;
  }
  process.stdout.write(`${JSON.stringify({ sim: 'listening', url: backend.url, port: backend.port })}\n`);
  const stop = (signal: NodeJS.Signals): void => {
    process.stdout.write(`${JSON.stringify({ sim: 'stopping', signal })}\n`);
    void backend.close().then(() => {
      process.exitCode = 0;
    });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

void main();
