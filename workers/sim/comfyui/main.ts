/**
 * Runs one simulated ComfyUI as a process:
 *   node dist/workers/sim/comfyui/main.js --port 8188 --steps-per-second 20
 * Prints one JSON line `{"role":"sim","kind":"comfyui","url":…}` once it accepts connections,
 * and stops on SIGTERM or SIGINT. Bad flags print `{"role":"sim","error":…}` on stderr, exit 2.
 */

import { comfySimMain } from './index.js';

async function main(): Promise<void> {
  let sim: Awaited<ReturnType<typeof comfySimMain>>;
  try {
    sim = await comfySimMain(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(
      `${JSON.stringify({ role: 'sim', kind: 'comfyui', error: err instanceof Error ? err.message : String(err) })}\n`,
    );
    process.exitCode = 2;
    return;
  }
  const stop = (): void => {
    void sim.close().then(() => {
      process.exitCode = 0;
    });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

void main();
