import { z } from 'zod';
import { type ToolSettingsOf, toolSettings } from '../../services/core/index.js';

/** The settings of a `generate_image` tool, beside what every tool has. */
export const diffusionSettings = toolSettings({
  /** Largest image width and height in pixels. */
  maxImageSize: z.number().int().min(64).max(8192).default(1024),
  /** Most sampler steps. */
  maxSteps: z.number().int().min(1).max(500).default(50),
  /** ComfyUI API-format workflow file; default the one shipped in workers/diffusion. */
  workflow: z.string().min(1).optional(),
});

/** A generate_image tool's settings, resolved. */
export type DiffusionToolSettings = ToolSettingsOf<typeof diffusionSettings>;
