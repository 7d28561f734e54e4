/**
 * The node types the simulated ComfyUI knows, ComfyUI's prompt validation (`validate_prompt`:
 * the same error types, messages and `node_errors` shape), `/object_info`, and the execution
 * plan of a valid API-format graph.
 */

/** One node of an API-format graph ("Save (API Format)" in ComfyUI). */
export interface ApiNode {
  class_type: string;
  inputs: Record<string, unknown>;
  _meta?: { title?: string };
}

/** An API-format graph: node id → node. */
export type ApiGraph = Record<string, ApiNode>;

type LinkType = 'MODEL' | 'CLIP' | 'VAE' | 'CONDITIONING' | 'LATENT' | 'IMAGE';

type InputSpec =
  | { kind: 'link'; type: LinkType }
  | { kind: 'INT'; min: number; max: number; default: number; step?: number }
  | { kind: 'FLOAT'; min: number; max: number; default: number; step: number }
  | { kind: 'STRING'; multiline: boolean; default: string }
  /** A choice from a list; `options` undefined accepts any non-empty string (checkpoint names). */
  | { kind: 'COMBO'; options: readonly string[] | undefined; example: string };

interface NodeDef {
  displayName: string;
  category: string;
  description: string;
  inputs: Record<string, InputSpec>;
  outputs: LinkType[];
  outputNames: string[];
  outputNode: boolean;
}

const SAMPLERS = [
  'euler',
  'euler_cfg_pp',
  'euler_ancestral',
  'heun',
  'dpm_2',
  'dpm_2_ancestral',
  'lms',
  'dpm_fast',
  'dpm_adaptive',
  'dpmpp_2s_ancestral',
  'dpmpp_sde',
  'dpmpp_2m',
  'dpmpp_2m_sde',
  'dpmpp_3m_sde',
  'ddpm',
  'lcm',
  'ddim',
  'uni_pc',
  'uni_pc_bh2',
] as const;

const SCHEDULERS = [
  'normal',
  'karras',
  'exponential',
  'sgm_uniform',
  'simple',
  'ddim_uniform',
  'beta',
] as const;

/** ComfyUI's MAX_RESOLUTION; the simulator's own limit (`maxImageSize`) is applied on top. */
const MAX_RESOLUTION = 16_384;

const link = (type: LinkType): InputSpec => ({ kind: 'link', type });

/** The simulated node types, with ComfyUI's input names, types and ranges. */
export const NODE_DEFS: Readonly<Record<string, NodeDef>> = {
  CheckpointLoaderSimple: {
    displayName: 'Load Checkpoint',
    category: 'loaders',
    description: 'Loads a diffusion model checkpoint.',
    inputs: { ckpt_name: { kind: 'COMBO', options: undefined, example: 'sim-diffusion.safetensors' } },
    outputs: ['MODEL', 'CLIP', 'VAE'],
    outputNames: ['MODEL', 'CLIP', 'VAE'],
    outputNode: false,
  },
  CLIPTextEncode: {
    displayName: 'CLIP Text Encode (Prompt)',
    category: 'conditioning',
    description: 'Encodes a text prompt.',
    inputs: { text: { kind: 'STRING', multiline: true, default: '' }, clip: link('CLIP') },
    outputs: ['CONDITIONING'],
    outputNames: ['CONDITIONING'],
    outputNode: false,
  },
  EmptyLatentImage: {
    displayName: 'Empty Latent Image',
    category: 'latent',
    description: 'Creates a batch of empty latent images.',
    inputs: {
      width: { kind: 'INT', min: 16, max: MAX_RESOLUTION, default: 512, step: 8 },
      height: { kind: 'INT', min: 16, max: MAX_RESOLUTION, default: 512, step: 8 },
      batch_size: { kind: 'INT', min: 1, max: 4096, default: 1 },
    },
    outputs: ['LATENT'],
    outputNames: ['LATENT'],
    outputNode: false,
  },
  KSampler: {
    displayName: 'KSampler',
    category: 'sampling',
    description: 'Denoises a latent image.',
    inputs: {
      model: link('MODEL'),
      seed: { kind: 'INT', min: 0, max: 2 ** 64 - 1, default: 0 },
      steps: { kind: 'INT', min: 1, max: 10_000, default: 20 },
      cfg: { kind: 'FLOAT', min: 0, max: 100, default: 8, step: 0.1 },
      sampler_name: { kind: 'COMBO', options: SAMPLERS, example: 'euler' },
      scheduler: { kind: 'COMBO', options: SCHEDULERS, example: 'normal' },
      positive: link('CONDITIONING'),
      negative: link('CONDITIONING'),
      latent_image: link('LATENT'),
      denoise: { kind: 'FLOAT', min: 0, max: 1, default: 1, step: 0.01 },
    },
    outputs: ['LATENT'],
    outputNames: ['LATENT'],
    outputNode: false,
  },
  VAEDecode: {
    displayName: 'VAE Decode',
    category: 'latent',
    description: 'Decodes latent images back into pixel space images.',
    inputs: { samples: link('LATENT'), vae: link('VAE') },
    outputs: ['IMAGE'],
    outputNames: ['IMAGE'],
    outputNode: false,
  },
  SaveImage: {
    displayName: 'Save Image',
    category: 'image',
    description: 'Saves the input images to your ComfyUI output directory.',
    inputs: {
      images: link('IMAGE'),
      filename_prefix: { kind: 'STRING', multiline: false, default: 'ComfyUI' },
    },
    outputs: [],
    outputNames: [],
    outputNode: true,
  },
  PreviewImage: {
    displayName: 'Preview Image',
    category: 'image',
    description: 'Saves the input images to your ComfyUI temp directory.',
    inputs: { images: link('IMAGE') },
    outputs: [],
    outputNames: [],
    outputNode: true,
  },
};

/** `GET /object_info` in ComfyUI's shape, for the simulated node types. */
export function objectInfo(): Record<string, unknown> {
  const info: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(NODE_DEFS)) {
    const required: Record<string, unknown> = {};
    for (const [input, spec] of Object.entries(def.inputs)) {
      switch (spec.kind) {
        case 'link':
          required[input] = [spec.type];
          break;
        case 'INT':
          required[input] = [
            'INT',
            { default: spec.default, min: spec.min, max: spec.max, step: spec.step ?? 1 },
          ];
          break;
        case 'FLOAT':
          required[input] = [
            'FLOAT',
            { default: spec.default, min: spec.min, max: spec.max, step: spec.step },
          ];
          break;
        case 'STRING':
          required[input] = ['STRING', { multiline: spec.multiline, default: spec.default }];
          break;
        case 'COMBO':
          required[input] = [spec.options ? [...spec.options] : [spec.example]];
          break;
      }
    }
    info[name] = {
      input: { required },
      input_order: { required: Object.keys(def.inputs) },
      output: def.outputs,
      output_is_list: def.outputs.map(() => false),
      output_name: def.outputNames,
      name,
      display_name: def.displayName,
      description: def.description,
      python_module: 'nodes',
      category: def.category,
      output_node: def.outputNode,
    };
  }
  return info;
}

/** One entry of ComfyUI's `node_errors[id].errors`. */
export interface NodeErrorEntry {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}

/** ComfyUI's top-level `error` object of a refused prompt. */
export interface PromptError {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}

export type NodeErrors = Record<
  string,
  { errors: NodeErrorEntry[]; dependent_outputs: string[]; class_type: string }
>;

/** What one output node renders. */
export interface OutputPlan {
  node: string;
  classType: 'SaveImage' | 'PreviewImage';
  filenamePrefix: string;
  width: number;
  height: number;
  batchSize: number;
  /** Everything that makes the image what it is: seeds, prompts, steps, checkpoint… */
  fingerprint: unknown[];
}

/** How to run a validated graph. */
export interface ExecutionPlan {
  /** Node ids in the order they run (dependencies first). */
  order: string[];
  /** Steps of each KSampler in `order`. */
  samplerSteps: Record<string, number>;
  outputs: OutputPlan[];
  /** Output node ids that passed validation (ComfyUI's `outputs_to_execute`). */
  outputIds: string[];
}

export type ValidationResult =
  | { ok: true; plan: ExecutionPlan; nodeErrors: NodeErrors }
  | { ok: false; error: PromptError; nodeErrors: NodeErrors | [] };

function isLink(value: unknown): value is [string, number] {
  return (
    Array.isArray(value) &&
    value.length === 2 &&
    typeof value[0] === 'string' &&
    typeof value[1] === 'number' &&
    Number.isInteger(value[1])
  );
}

function invalidPrompt(message: string, details: string): ValidationResult {
  return { ok: false, error: { type: 'invalid_prompt', message, details, extra_info: {} }, nodeErrors: [] };
}

interface Limits {
  maxImageSize: number;
  maxBatchSize: number;
}

/**
 * ComfyUI's `validate_prompt` for the simulated node types: unknown or missing `class_type` is
 * `invalid_prompt`, no output node is `prompt_no_outputs`, bad inputs are per-node errors and,
 * when no output is left runnable, `prompt_outputs_failed_validation`. The simulator adds one
 * rule of its own: an output must have a KSampler upstream (it has nothing else to render).
 */
export function validateGraph(value: unknown, limits: Limits): ValidationResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return invalidPrompt(
      'Prompt is not a JSON object of nodes.',
      `got ${Array.isArray(value) ? 'array' : typeof value}`,
    );
  }
  const graph = value as Record<string, unknown>;
  for (const [id, node] of Object.entries(graph)) {
    const classType =
      typeof node === 'object' && node !== null ? (node as { class_type?: unknown }).class_type : undefined;
    if (typeof classType !== 'string') {
      return invalidPrompt(
        'Cannot execute because a node is missing the class_type property.',
        `Node ID '#${id}'`,
      );
    }
    if (!Object.hasOwn(NODE_DEFS, classType)) {
      return invalidPrompt(`Cannot execute because node ${classType} does not exist.`, `Node ID '#${id}'`);
    }
    const holder = node as { inputs?: unknown };
    if (holder.inputs === undefined) holder.inputs = {};
    if (typeof holder.inputs !== 'object' || holder.inputs === null || Array.isArray(holder.inputs)) {
      return invalidPrompt('Node inputs must be an object.', `Node ID '#${id}'`);
    }
  }
  const nodes = graph as ApiGraph;
  const outputIds = Object.keys(nodes)
    .filter((id) => NODE_DEFS[nodes[id]?.class_type ?? '']?.outputNode)
    .sort(compareIds);
  if (outputIds.length === 0) {
    return {
      ok: false,
      error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} },
      nodeErrors: [],
    };
  }

  // Validate each node once; an output is good when it and all its ancestors are.
  const nodeValid = new Map<string, boolean>();
  const errorsOf = new Map<string, NodeErrorEntry[]>();
  const validating = new Set<string>();
  const validateNode = (id: string): boolean => {
    const known = nodeValid.get(id);
    if (known !== undefined) return known;
    if (validating.has(id)) {
      errorsOf.set(id, [
        {
          type: 'dependency_cycle_detected',
          message: 'Dependency cycle detected',
          details: id,
          extra_info: {},
        },
      ]);
      return false;
    }
    validating.add(id);
    const node = nodes[id] as ApiNode;
    const def = NODE_DEFS[node.class_type] as NodeDef;
    const inputs = node.inputs;
    const errors: NodeErrorEntry[] = [];
    let ancestorsValid = true;
    for (const [name, spec] of Object.entries(def.inputs)) {
      const val = inputs[name];
      const fail = (type: string, message: string, details: string, extra: Record<string, unknown> = {}) =>
        errors.push({
          type,
          message,
          details,
          extra_info: {
            input_name: name,
            input_config: objectInputConfig(spec),
            received_value: val,
            ...extra,
          },
        });
      if (val === undefined) {
        errors.push({
          type: 'required_input_missing',
          message: 'Required input is missing',
          details: name,
          extra_info: { input_name: name },
        });
        continue;
      }
      if (Array.isArray(val)) {
        if (!isLink(val)) {
          fail('bad_linked_input', 'Bad linked input, must be a length-2 list of [string, int]', name);
          continue;
        }
        const [from, slot] = val;
        const source = nodes[from];
        if (!source) {
          fail(
            'bad_linked_input',
            'Linked node does not exist',
            `${name}: node '#${from}' is not in the prompt`,
          );
          continue;
        }
        const sourceType = (NODE_DEFS[source.class_type] as NodeDef).outputs[slot];
        const expected = spec.kind === 'link' ? spec.type : spec.kind;
        if (sourceType !== expected) {
          fail(
            'return_type_mismatch',
            'Return type mismatch between linked nodes',
            `${name}, received_type(${sourceType ?? 'none'}) mismatch input_type(${expected})`,
            { received_type: sourceType ?? null, linked_node: val },
          );
          continue;
        }
        if (!validateNode(from)) ancestorsValid = false;
        continue;
      }
      switch (spec.kind) {
        case 'link':
          fail('bad_linked_input', 'Bad linked input, must be a length-2 list of [string, int]', name);
          break;
        case 'INT':
        case 'FLOAT': {
          const num =
            typeof val === 'number'
              ? val
              : typeof val === 'string' && val.trim() !== ''
                ? Number(val)
                : Number.NaN;
          if (!Number.isFinite(num) || typeof val === 'boolean') {
            fail(
              'invalid_input_type',
              `Failed to convert an input value to a ${spec.kind} value`,
              `${name}, ${String(val)}`,
            );
            break;
          }
          const v = spec.kind === 'INT' ? Math.trunc(num) : num;
          if (v < spec.min) {
            fail('value_smaller_than_min', `Value ${v} smaller than min of ${spec.min}`, name);
            break;
          }
          if (v > spec.max) {
            fail('value_bigger_than_max', `Value ${v} bigger than max of ${spec.max}`, name);
            break;
          }
          inputs[name] = v;
          break;
        }
        case 'STRING':
          if (typeof val !== 'string' && typeof val !== 'number') {
            fail(
              'invalid_input_type',
              'Failed to convert an input value to a STRING value',
              `${name}, ${String(val)}`,
            );
          } else inputs[name] = String(val);
          break;
        case 'COMBO':
          if (typeof val !== 'string' || val === '' || (spec.options && !spec.options.includes(val))) {
            fail(
              'value_not_in_list',
              'Value not in list',
              `${name}: '${String(val)}' not in ${spec.options ? `[${spec.options.map((o) => `'${o}'`).join(', ')}]` : 'the available files'}`,
            );
          }
          break;
      }
    }
    // The simulator's own limits on top of ComfyUI's ranges.
    if (errors.length === 0 && node.class_type === 'EmptyLatentImage') {
      const width = inputs.width as number;
      const height = inputs.height as number;
      const batch = inputs.batch_size as number;
      if (width > limits.maxImageSize || height > limits.maxImageSize) {
        errors.push({
          type: 'value_bigger_than_max',
          message: `Value ${Math.max(width, height)} bigger than max of ${limits.maxImageSize}`,
          details: width > limits.maxImageSize ? 'width' : 'height',
          extra_info: { input_name: width > limits.maxImageSize ? 'width' : 'height' },
        });
      } else if (batch > limits.maxBatchSize || width * height * batch > limits.maxImageSize ** 2) {
        errors.push({
          type: 'value_bigger_than_max',
          message: `Batch of ${batch} ${width}x${height} images is more than this simulated GPU holds (at most ${limits.maxBatchSize} images and ${limits.maxImageSize ** 2} pixels)`,
          details: 'batch_size',
          extra_info: { input_name: 'batch_size' },
        });
      }
    }
    if (errors.length === 0 && def.outputNode && !hasSampler(nodes, id)) {
      errors.push({
        type: 'sim_no_sampler',
        message: 'The simulated ComfyUI needs a KSampler upstream of every output',
        details: `${node.class_type} '#${id}' has no KSampler among its inputs`,
        extra_info: {},
      });
    }
    validating.delete(id);
    if (errors.length > 0) errorsOf.set(id, errors);
    const valid = errors.length === 0 && ancestorsValid;
    nodeValid.set(id, valid);
    return valid;
  };

  const nodeErrors: NodeErrors = {};
  const good: string[] = [];
  for (const out of outputIds) {
    if (validateNode(out)) {
      good.push(out);
      continue;
    }
    for (const failed of ancestorsOf(nodes, out)) {
      const errors = errorsOf.get(failed);
      if (!errors) continue;
      let entry = nodeErrors[failed];
      if (!entry) {
        entry = { errors, dependent_outputs: [], class_type: (nodes[failed] as ApiNode).class_type };
        nodeErrors[failed] = entry;
      }
      entry.dependent_outputs.push(out);
    }
  }
  if (good.length === 0) {
    const details = Object.entries(nodeErrors)
      .flatMap(([id, e]) => e.errors.map((x) => `${e.class_type} '#${id}': ${x.message}: ${x.details}`))
      .join('\n');
    return {
      ok: false,
      error: {
        type: 'prompt_outputs_failed_validation',
        message: 'Prompt outputs failed validation',
        details,
        extra_info: {},
      },
      nodeErrors,
    };
  }
  return { ok: true, plan: planOf(nodes, good), nodeErrors };
}

function objectInputConfig(spec: InputSpec): unknown {
  return spec.kind === 'link' ? [spec.type] : [spec.kind];
}

function compareIds(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  if (Number.isFinite(na) && Number.isFinite(nb) && na !== nb) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `id` and every node it depends on, each once (assumes links point at existing nodes). */
function ancestorsOf(nodes: ApiGraph, id: string): string[] {
  const seen = new Set<string>();
  const visit = (n: string) => {
    if (seen.has(n) || !nodes[n]) return;
    seen.add(n);
    for (const v of Object.values(nodes[n].inputs ?? {})) if (isLink(v)) visit(v[0]);
  };
  visit(id);
  return [...seen];
}

function hasSampler(nodes: ApiGraph, id: string): boolean {
  return ancestorsOf(nodes, id).some((n) => nodes[n]?.class_type === 'KSampler');
}

/** The node a link input points at. */
function linked(nodes: ApiGraph, id: string, input: string): [string, ApiNode] {
  const [from] = (nodes[id] as ApiNode).inputs[input] as [string, number];
  return [from, nodes[from] as ApiNode];
}

/** Dependencies-first order of everything the good outputs need, the sampler and image settings. */
function planOf(nodes: ApiGraph, outputIds: string[]): ExecutionPlan {
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (id: string) => {
    if (seen.has(id)) return;
    seen.add(id);
    const inputs = (nodes[id] as ApiNode).inputs;
    for (const key of Object.keys(inputs)) {
      const v = inputs[key];
      if (isLink(v)) visit(v[0]);
    }
    order.push(id);
  };
  for (const out of outputIds) visit(out);
  const samplerSteps: Record<string, number> = {};
  for (const id of order) {
    const node = nodes[id] as ApiNode;
    if (node.class_type === 'KSampler') samplerSteps[id] = node.inputs.steps as number;
  }
  const outputs = outputIds.map((id): OutputPlan => {
    const node = nodes[id] as ApiNode;
    const fingerprint: unknown[] = [];
    // images ← VAEDecode ← (KSampler ←)* EmptyLatentImage; record every sampler on the way.
    const [decodeId] = linked(nodes, id, 'images');
    const [, vaeSource] = linked(nodes, decodeId, 'vae');
    fingerprint.push(vaeSource.inputs.ckpt_name);
    let [latentId, latent] = linked(nodes, decodeId, 'samples');
    while (latent.class_type === 'KSampler') {
      const s = latent.inputs;
      const [, pos] = linked(nodes, latentId, 'positive');
      const [, neg] = linked(nodes, latentId, 'negative');
      const [, model] = linked(nodes, latentId, 'model');
      fingerprint.push([
        s.seed,
        s.steps,
        s.cfg,
        s.sampler_name,
        s.scheduler,
        s.denoise,
        pos.inputs.text,
        neg.inputs.text,
        model.inputs.ckpt_name,
      ]);
      [latentId, latent] = linked(nodes, latentId, 'latent_image');
    }
    const empty = latent; // EmptyLatentImage
    // ComfyUI's latents are 1/8 of the image size, so sizes round down to a multiple of 8.
    const width = Math.max(8, Math.floor((empty.inputs.width as number) / 8) * 8);
    const height = Math.max(8, Math.floor((empty.inputs.height as number) / 8) * 8);
    fingerprint.push(width, height);
    return {
      node: id,
      classType: node.class_type === 'PreviewImage' ? 'PreviewImage' : 'SaveImage',
      filenamePrefix: node.class_type === 'SaveImage' ? String(node.inputs.filename_prefix) : 'ComfyUI',
      width,
      height,
      batchSize: empty.inputs.batch_size as number,
      fingerprint,
    };
  });
  return { order, samplerSteps, outputs, outputIds };
}
