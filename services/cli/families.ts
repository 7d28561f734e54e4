import { conformanceFamily } from '../../workers/conformance/index.js';
import { diffusionFamily } from '../../workers/diffusion/index.js';
import { embeddingsFamily } from '../../workers/embeddings/index.js';
import { inferenceFamily } from '../../workers/inference/index.js';
import type { InputToolAdapter } from '../../workers/runtime/index.js';
import { registerFamilies, type ToolFamilies } from '../core/index.js';

/**
 * The tool families this cluster serves, registered once: configuration is resolved against
 * them (which templates and backend kinds exist, the built-in pools and tools), workers take
 * their adapters from them, and the process closes them last. A new family is one more entry.
 */
export const families: ToolFamilies<InputToolAdapter> = registerFamilies([
  inferenceFamily,
  embeddingsFamily,
  diffusionFamily,
  conformanceFamily,
]);
