import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../core/generated/mcp_cluster.js';
import { protoPath } from '../core/index.js';

// Where the Delivery service definition comes from: loaded from proto/mcp_cluster.proto with
// proto-loader, typed by the generated code. The only file of this folder that knows how.

/** Loader options; they must match the flags `proto/gen.sh` generates the types with. */
const LOADER_OPTIONS: protoLoader.Options = {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let loaded: ProtoGrpcType | undefined;

/** The Delivery service definition and client constructor, loaded once per process. */
export function deliveryProto(): ProtoGrpcType['mcpcluster']['v1'] {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(protoPath(), LOADER_OPTIONS),
  ) as unknown as ProtoGrpcType;
  return loaded.mcpcluster.v1;
}
