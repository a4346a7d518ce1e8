import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { CollectiveClient as _rft_collective_v1_CollectiveClient, CollectiveDefinition as _rft_collective_v1_CollectiveDefinition } from './rft/collective/v1/Collective.js';
import type { Frame as _rft_collective_v1_Frame, Frame__Output as _rft_collective_v1_Frame__Output } from './rft/collective/v1/Frame.js';
import type { HelloRequest as _rft_collective_v1_HelloRequest, HelloRequest__Output as _rft_collective_v1_HelloRequest__Output } from './rft/collective/v1/HelloRequest.js';
import type { HelloResponse as _rft_collective_v1_HelloResponse, HelloResponse__Output as _rft_collective_v1_HelloResponse__Output } from './rft/collective/v1/HelloResponse.js';
import type { LinkRequest as _rft_collective_v1_LinkRequest, LinkRequest__Output as _rft_collective_v1_LinkRequest__Output } from './rft/collective/v1/LinkRequest.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  rft: {
    collective: {
      v1: {
        Collective: SubtypeConstructor<typeof grpc.Client, _rft_collective_v1_CollectiveClient> & { service: _rft_collective_v1_CollectiveDefinition }
        Frame: MessageTypeDefinition<_rft_collective_v1_Frame, _rft_collective_v1_Frame__Output>
        HelloRequest: MessageTypeDefinition<_rft_collective_v1_HelloRequest, _rft_collective_v1_HelloRequest__Output>
        HelloResponse: MessageTypeDefinition<_rft_collective_v1_HelloResponse, _rft_collective_v1_HelloResponse__Output>
        LinkRequest: MessageTypeDefinition<_rft_collective_v1_LinkRequest, _rft_collective_v1_LinkRequest__Output>
      }
    }
  }
}

