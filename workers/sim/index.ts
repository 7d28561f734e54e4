/**
 * Simulated GPU backend: a stand-in for a vLLM server that speaks vLLM's OpenAI-compatible wire
 * protocol (chat completions with SSE streaming, embeddings, models, health, Prometheus
 * metrics) and TEI's embeddings API (`/embed`, `/info`) with a latency and capacity model
 * (continuous batching, per-session prefix cache) and failure injection for tests. For
 * development, CI and benchmarks; it depends on nothing else in this repository. This file is
 * its only public entry.
 */

export type { ComfySim, ComfySimFailure, ComfySimOptions, ComfySimStats } from './comfyui/index.js';
export { comfySimMain, parseComfySimArgs, startComfySim } from './comfyui/index.js';
export type { SimFailureMode, SimFailureState } from './failures.js';
export { simFailureModes } from './failures.js';
export type { SimOptions } from './options.js';
export { parseSimArgs, resolveSimOptions, simFlags, simOptionDefaults } from './options.js';
/** The seeded text generator: tests check an answer word for word against it. */
export { generateTokens } from './seeded-output.js';
export type { SimBackend } from './server.js';
export { startSimBackend } from './server.js';
export type { RecordedRequest, SimStats } from './sim-state.js';
