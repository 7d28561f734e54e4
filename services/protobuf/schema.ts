import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type { Priority } from '../core/index.js';

const PROTO_PATH = fileURLToPath(new URL('../../../proto/mcp_cluster.proto', import.meta.url));
const PROTO_PATH_SRC = fileURLToPath(new URL('../../proto/mcp_cluster.proto', import.meta.url));

/** Absolute path of the wire schema, both from `dist/` and from the sources. */
export function protoPath(): string {
  // Compiled code lives one level deeper (dist/services/protobuf) than the sources.
  return import.meta.url.includes('/dist/') ? PROTO_PATH : PROTO_PATH_SRC;
}

/** The message types of the wire schema, loaded once per process. */
export interface WireTypes {
  toolCall: protobuf.Type;
  chunk: protobuf.Type;
  order: protobuf.Type;
  /**
   * `enum Priority` both ways, named as `npm run gen` names the values (`PRIORITY_HIGH` is
   * `high`); an unknown number has no name.
   */
  priorityNumber: Readonly<Record<Priority, number>>;
  priorityName: readonly (Priority | undefined)[];
}

let loaded: WireTypes | undefined;

/** The schema's message types; the .proto is read on first use. */
export function wireTypes(): WireTypes {
  if (!loaded) {
    const root = protobuf.loadSync(protoPath());
    root.resolveAll();
    const priorityNumber: Record<string, number> = {};
    const priorityName: Priority[] = [];
    for (const [name, number] of Object.entries(root.lookupEnum('mcpcluster.v1.Priority').values)) {
      const priority = name.replace(/^PRIORITY_/, '').toLowerCase() as Priority;
      priorityNumber[priority] = number;
      priorityName[number] = priority;
    }
    loaded = {
      priorityNumber: priorityNumber as Record<Priority, number>,
      priorityName,
      toolCall: root.lookupType('mcpcluster.v1.ToolCall'),
      chunk: root.lookupType('mcpcluster.v1.Chunk'),
      order: root.lookupType('mcpcluster.v1.Order'),
    };
  }
  return loaded;
}
