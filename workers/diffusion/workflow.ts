import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ClusterError } from '../../services/core/index.js';

// The generate_image workflow template: ComfyUI's API-format graph, checked once when loaded
// (the nodes each argument goes into, found by class_type) and filled per call.

/** One node of a ComfyUI API-format graph. */
export interface WorkflowNode {
  class_type: string;
  inputs: Record<string, unknown>;
  _meta?: { title?: string };
}

/** A ComfyUI API-format graph: node id → node. */
export type WorkflowGraph = Record<string, WorkflowNode>;

/** A checked workflow template and the nodes each argument goes into, found by class_type. */
export interface Workflow {
  /** The file it came from (for messages). */
  source: string;
  graph: WorkflowGraph;
  /** KSampler nodes: `seed` and `steps`. */
  samplers: string[];
  /** CLIPTextEncode nodes feeding a KSampler's `positive` input: `text` = prompt. */
  positive: string[];
  /** CLIPTextEncode nodes feeding a KSampler's `negative` input: `text` = negative_prompt. */
  negative: string[];
  /** EmptyLatentImage nodes: `width`, `height`. */
  latents: string[];
  /** CheckpointLoaderSimple nodes: `ckpt_name` = the tool's model. */
  checkpoints: string[];
}

/** The node types a generate_image workflow must have. */
export const REQUIRED_NODE_TYPES = [
  'CheckpointLoaderSimple',
  'CLIPTextEncode',
  'EmptyLatentImage',
  'KSampler',
  'SaveImage',
] as const;

/** What one call puts into the template. */
export interface ImageRequest {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  seed: number;
  /** Checkpoint file name (`ckpt_name`), the tool's `model`. */
  model: string;
}

/** The shipped default workflow, from the sources and from `dist/` (which has no copy of it). */
function defaultWorkflowPath(): string {
  const candidates = [
    fileURLToPath(new URL('./workflows/default.json', import.meta.url)),
    fileURLToPath(new URL('../../../workers/diffusion/workflows/default.json', import.meta.url)),
  ];
  return candidates.find((path) => existsSync(path)) ?? (candidates[0] as string);
}

function invalidWorkflow(source: string, problem: string, cause?: unknown): ClusterError {
  return new ClusterError('INVALID_CONFIG', `workflow ${source}: ${problem}`, { cause });
}

function isLink(value: unknown): value is [string, number] {
  return (
    Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'number'
  );
}

/**
 * Checks a parsed API-format workflow and finds, by class_type, the nodes each argument goes
 * into. Throws ClusterError INVALID_CONFIG naming `source` and the problem (a UI-format export,
 * a missing node type, a KSampler prompt input that does not come from a CLIPTextEncode).
 */
export function parseWorkflow(value: unknown, source: string): Workflow {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidWorkflow(source, 'expected a JSON object of nodes (ComfyUI API format)');
  }
  const raw = value as Record<string, unknown>;
  if (Array.isArray(raw.nodes) || Array.isArray(raw.links)) {
    throw invalidWorkflow(
      source,
      'this is a ComfyUI UI workflow, not the API format; export it from ComfyUI with "Export (API)" / "Save (API Format)"',
    );
  }
  const graph: WorkflowGraph = {};
  for (const [id, node] of Object.entries(raw)) {
    const n = node as { class_type?: unknown; inputs?: unknown } | null;
    if (typeof n !== 'object' || n === null || typeof n.class_type !== 'string') {
      throw invalidWorkflow(source, `node "${id}" has no class_type (is this an API-format workflow?)`);
    }
    if (typeof n.inputs !== 'object' || n.inputs === null || Array.isArray(n.inputs)) {
      throw invalidWorkflow(source, `node "${id}" (${n.class_type}) has no inputs object`);
    }
    graph[id] = node as WorkflowNode;
  }
  const ofType = (type: string) => Object.keys(graph).filter((id) => graph[id]?.class_type === type);
  for (const type of REQUIRED_NODE_TYPES) {
    if (ofType(type).length === 0) {
      throw invalidWorkflow(
        source,
        `has no ${type} node; a generate_image workflow needs ${REQUIRED_NODE_TYPES.join(', ')}`,
      );
    }
  }
  const samplers = ofType('KSampler');
  const textEncoderOf = (sampler: string, input: 'positive' | 'negative'): string => {
    const link = graph[sampler]?.inputs[input];
    const target = isLink(link) ? graph[link[0]] : undefined;
    if (!isLink(link) || target?.class_type !== 'CLIPTextEncode') {
      throw invalidWorkflow(
        source,
        `the ${input} input of KSampler "${sampler}" must be linked to a CLIPTextEncode node (the tool fills its text)`,
      );
    }
    return link[0];
  };
  const positive = [...new Set(samplers.map((s) => textEncoderOf(s, 'positive')))];
  const negative = [...new Set(samplers.map((s) => textEncoderOf(s, 'negative')))];
  const shared = positive.find((id) => negative.includes(id));
  if (shared !== undefined) {
    throw invalidWorkflow(source, `CLIPTextEncode "${shared}" feeds both a positive and a negative input`);
  }
  return {
    source,
    graph,
    samplers,
    positive,
    negative,
    latents: ofType('EmptyLatentImage'),
    checkpoints: ofType('CheckpointLoaderSimple'),
  };
}

/**
 * Reads and checks a workflow file (ComfyUI API format); `path` undefined is the shipped
 * default. Throws ClusterError INVALID_CONFIG naming the file for an unreadable file, bad JSON
 * or a workflow missing a required node type.
 */
export async function loadWorkflow(path?: string): Promise<Workflow> {
  const file = path ?? defaultWorkflowPath();
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw invalidWorkflow(
      file,
      `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      err,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalidWorkflow(file, `is not valid JSON (${(err as Error).message})`, err);
  }
  return parseWorkflow(value, file);
}

/** A copy of the template with one call's arguments filled in. */
export function fillWorkflow(workflow: Workflow, request: ImageRequest): WorkflowGraph {
  const graph = structuredClone(workflow.graph);
  const set = (ids: string[], values: Record<string, unknown>) => {
    for (const id of ids) Object.assign((graph[id] as WorkflowNode).inputs, values);
  };
  set(workflow.samplers, { seed: request.seed, steps: request.steps });
  set(workflow.positive, { text: request.prompt });
  set(workflow.negative, { text: request.negativePrompt });
  set(workflow.latents, { width: request.width, height: request.height });
  set(workflow.checkpoints, { ckpt_name: request.model });
  return graph;
}

/** Loaded workflows by path ('' for the default); a failed load is not kept, so a fix is picked up. */
const workflows = new Map<string, Promise<Workflow>>();

export function cachedWorkflow(path: string | undefined): Promise<Workflow> {
  const key = path ?? '';
  let loading = workflows.get(key);
  if (!loading) {
    loading = loadWorkflow(path);
    workflows.set(key, loading);
    loading.catch(() => workflows.delete(key));
  }
  return loading;
}
