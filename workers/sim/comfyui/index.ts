/**
 * Simulated ComfyUI: a stand-in for one ComfyUI instance (one GPU) that speaks ComfyUI's wire
 * protocol (`POST /prompt`, `/ws` messages, `/history`, `/view`, `/interrupt`, `/queue`,
 * `/system_stats`, `/object_info`) with a sampler-speed model, deterministic PNG output and
 * failure injection. For development, CI and benchmarks; it depends on nothing else in this
 * repository.
 */

import { type ComfySimOptions, parseComfySimArgs } from './options.js';
import { type ComfySim, startComfySim } from './server.js';

export type { ApiGraph, ApiNode } from './nodes.js';
export type { ComfySimFailure, ComfySimOptions } from './options.js';
export {
  COMFY_SIM_FAILURES,
  comfySimFlags,
  comfySimOptionDefaults,
  parseComfySimArgs,
  resolveComfySimOptions,
} from './options.js';
export type { ComfySim, ComfySimStats } from './server.js';
export { startComfySim } from './server.js';

/** Where `comfySimMain` writes its ready line. */
export interface ComfySimMainIo {
  stdout: { write(text: string): unknown };
}

/**
 * Runs the simulated ComfyUI as a command: parses `argv` (flags of `parseComfySimArgs`, e.g.
 * `--port 8188 --steps-per-second 20`; `--kind comfyui` is accepted), starts the server and
 * prints one JSON line `{"role":"sim","kind":"comfyui","url":…,"port":…}` once it accepts
 * connections. Resolves with the running sim (the caller stops it with `close()`, e.g. on
 * SIGTERM); rejects with an Error naming the flag for bad usage, or the listen error.
 */
export async function comfySimMain(
  argv: readonly string[],
  io: ComfySimMainIo = { stdout: process.stdout },
): Promise<ComfySim> {
  const options: Partial<ComfySimOptions> = parseComfySimArgs(argv);
  const sim = await startComfySim(options);
  io.stdout.write(`${JSON.stringify({ role: 'sim', kind: 'comfyui', url: sim.url, port: sim.port })}\n`);
  return sim;
}
