import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { Accepted as _mcpcluster_v1_Accepted, Accepted__Output as _mcpcluster_v1_Accepted__Output } from './mcpcluster/v1/Accepted.js';
import type { CallError as _mcpcluster_v1_CallError, CallError__Output as _mcpcluster_v1_CallError__Output } from './mcpcluster/v1/CallError.js';
import type { Cancel as _mcpcluster_v1_Cancel, Cancel__Output as _mcpcluster_v1_Cancel__Output } from './mcpcluster/v1/Cancel.js';
import type { Chunk as _mcpcluster_v1_Chunk, Chunk__Output as _mcpcluster_v1_Chunk__Output } from './mcpcluster/v1/Chunk.js';
import type { Delivered as _mcpcluster_v1_Delivered, Delivered__Output as _mcpcluster_v1_Delivered__Output } from './mcpcluster/v1/Delivered.js';
import type { DeliveryClient as _mcpcluster_v1_DeliveryClient, DeliveryDefinition as _mcpcluster_v1_DeliveryDefinition } from './mcpcluster/v1/Delivery.js';
import type { Final as _mcpcluster_v1_Final, Final__Output as _mcpcluster_v1_Final__Output } from './mcpcluster/v1/Final.js';
import type { Order as _mcpcluster_v1_Order, Order__Output as _mcpcluster_v1_Order__Output } from './mcpcluster/v1/Order.js';
import type { Partial as _mcpcluster_v1_Partial, Partial__Output as _mcpcluster_v1_Partial__Output } from './mcpcluster/v1/Partial.js';
import type { Progress as _mcpcluster_v1_Progress, Progress__Output as _mcpcluster_v1_Progress__Output } from './mcpcluster/v1/Progress.js';
import type { Timing as _mcpcluster_v1_Timing, Timing__Output as _mcpcluster_v1_Timing__Output } from './mcpcluster/v1/Timing.js';
import type { ToolCall as _mcpcluster_v1_ToolCall, ToolCall__Output as _mcpcluster_v1_ToolCall__Output } from './mcpcluster/v1/ToolCall.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  mcpcluster: {
    v1: {
      Accepted: MessageTypeDefinition<_mcpcluster_v1_Accepted, _mcpcluster_v1_Accepted__Output>
      CallError: MessageTypeDefinition<_mcpcluster_v1_CallError, _mcpcluster_v1_CallError__Output>
      Cancel: MessageTypeDefinition<_mcpcluster_v1_Cancel, _mcpcluster_v1_Cancel__Output>
      Chunk: MessageTypeDefinition<_mcpcluster_v1_Chunk, _mcpcluster_v1_Chunk__Output>
      Delivered: MessageTypeDefinition<_mcpcluster_v1_Delivered, _mcpcluster_v1_Delivered__Output>
      /**
       * Served by every ingress replica. A worker opens one long-lived Connect stream per
       * replica and multiplexes the chunks of all calls it runs for that replica on it.
       */
      Delivery: SubtypeConstructor<typeof grpc.Client, _mcpcluster_v1_DeliveryClient> & { service: _mcpcluster_v1_DeliveryDefinition }
      Final: MessageTypeDefinition<_mcpcluster_v1_Final, _mcpcluster_v1_Final__Output>
      Order: MessageTypeDefinition<_mcpcluster_v1_Order, _mcpcluster_v1_Order__Output>
      Partial: MessageTypeDefinition<_mcpcluster_v1_Partial, _mcpcluster_v1_Partial__Output>
      Priority: EnumTypeDefinition
      Progress: MessageTypeDefinition<_mcpcluster_v1_Progress, _mcpcluster_v1_Progress__Output>
      Timing: MessageTypeDefinition<_mcpcluster_v1_Timing, _mcpcluster_v1_Timing__Output>
      ToolCall: MessageTypeDefinition<_mcpcluster_v1_ToolCall, _mcpcluster_v1_ToolCall__Output>
    }
  }
}

