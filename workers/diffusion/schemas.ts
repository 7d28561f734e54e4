import type { JsonSchema, ToolSettings } from '../../services/core/index.js';
import { diffusionSettings } from './settings.js';

const imageSideSchema = (limit: number, what: string) => ({
  type: 'integer',
  minimum: 64,
  maximum: limit,
  multipleOf: 8,
  default: Math.min(512, limit),
  description: `Image ${what} in pixels, a multiple of 8 (64-${limit}).`,
});

/** `generate_image(prompt, negative_prompt?, width?, height?, steps?, seed?)`, within the tool's limits. */
export function generateImageInput(tool: ToolSettings): JsonSchema {
  const { maxImageSize, maxSteps } = diffusionSettings.of(tool);
  return {
    type: 'object',
    properties: {
      prompt: { type: 'string', minLength: 1, maxLength: 4000, description: 'What the image shows.' },
      negative_prompt: { type: 'string', maxLength: 4000, description: 'What the image must not show.' },
      width: imageSideSchema(maxImageSize, 'width'),
      height: imageSideSchema(maxImageSize, 'height'),
      steps: {
        type: 'integer',
        minimum: 1,
        maximum: maxSteps,
        default: Math.min(20, maxSteps),
        description: `Sampler steps (1-${maxSteps}).`,
      },
      seed: {
        type: 'integer',
        minimum: 0,
        maximum: 4_294_967_295,
        description: 'Random seed; the same seed and prompt give the same image.',
      },
    },
    required: ['prompt'],
    additionalProperties: false,
  };
}
