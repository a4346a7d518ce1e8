// Original file: proto/collective.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { HelloRequest as _rft_collective_v1_HelloRequest, HelloRequest__Output as _rft_collective_v1_HelloRequest__Output } from '../../../rft/collective/v1/HelloRequest.js';
import type { HelloResponse as _rft_collective_v1_HelloResponse, HelloResponse__Output as _rft_collective_v1_HelloResponse__Output } from '../../../rft/collective/v1/HelloResponse.js';

export interface CollectiveClient extends grpc.Client {
  Hello(argument: _rft_collective_v1_HelloRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  Hello(argument: _rft_collective_v1_HelloRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  Hello(argument: _rft_collective_v1_HelloRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  Hello(argument: _rft_collective_v1_HelloRequest, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  hello(argument: _rft_collective_v1_HelloRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  hello(argument: _rft_collective_v1_HelloRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  hello(argument: _rft_collective_v1_HelloRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  hello(argument: _rft_collective_v1_HelloRequest, callback: grpc.requestCallback<_rft_collective_v1_HelloResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface CollectiveHandlers extends grpc.UntypedServiceImplementation {
  Hello: grpc.handleUnaryCall<_rft_collective_v1_HelloRequest__Output, _rft_collective_v1_HelloResponse>;
  
}

export interface CollectiveDefinition extends grpc.ServiceDefinition {
  Hello: MethodDefinition<_rft_collective_v1_HelloRequest, _rft_collective_v1_HelloResponse, _rft_collective_v1_HelloRequest__Output, _rft_collective_v1_HelloResponse__Output>
}
