/**
 * Simulated GPU backend: a stand-in for a vLLM server that speaks vLLM's OpenAI-compatible wire
 * protocol (chat completions with SSE streaming, embeddings, models, health, Prometheus
 * metrics) with a latency and capacity model. For development, CI and benchmarks; it depends
 * on nothing else in this repository. This file is its only public entry.
 */

export type { SimOptions } from './options.js';
export { parseSimArgs, resolveSimOptions, simFlags, simOptionDefaults } from './options.js';
export type { SimBackend } from './server.js';
export { startSimBackend } from './server.js';
export type { SimStats } from './sim-state.js';
