// Original file: proto/grader.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { GradeBatchRequest as _rft_grader_v1_GradeBatchRequest, GradeBatchRequest__Output as _rft_grader_v1_GradeBatchRequest__Output } from '../../../rft/grader/v1/GradeBatchRequest.js';
import type { GradeBatchResponse as _rft_grader_v1_GradeBatchResponse, GradeBatchResponse__Output as _rft_grader_v1_GradeBatchResponse__Output } from '../../../rft/grader/v1/GradeBatchResponse.js';
import type { GradeRequest as _rft_grader_v1_GradeRequest, GradeRequest__Output as _rft_grader_v1_GradeRequest__Output } from '../../../rft/grader/v1/GradeRequest.js';
import type { GradeResponse as _rft_grader_v1_GradeResponse, GradeResponse__Output as _rft_grader_v1_GradeResponse__Output } from '../../../rft/grader/v1/GradeResponse.js';
import type { ValidateRequest as _rft_grader_v1_ValidateRequest, ValidateRequest__Output as _rft_grader_v1_ValidateRequest__Output } from '../../../rft/grader/v1/ValidateRequest.js';
import type { ValidateResponse as _rft_grader_v1_ValidateResponse, ValidateResponse__Output as _rft_grader_v1_ValidateResponse__Output } from '../../../rft/grader/v1/ValidateResponse.js';

export interface GraderServiceClient extends grpc.Client {
  Grade(argument: _rft_grader_v1_GradeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  Grade(argument: _rft_grader_v1_GradeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  Grade(argument: _rft_grader_v1_GradeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  Grade(argument: _rft_grader_v1_GradeRequest, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  grade(argument: _rft_grader_v1_GradeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  grade(argument: _rft_grader_v1_GradeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  grade(argument: _rft_grader_v1_GradeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  grade(argument: _rft_grader_v1_GradeRequest, callback: grpc.requestCallback<_rft_grader_v1_GradeResponse__Output>): grpc.ClientUnaryCall;
  
  GradeBatch(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchResponse__Output>;
  GradeBatch(options?: grpc.CallOptions): grpc.ClientDuplexStream<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchResponse__Output>;
  gradeBatch(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchResponse__Output>;
  gradeBatch(options?: grpc.CallOptions): grpc.ClientDuplexStream<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchResponse__Output>;
  
  Validate(argument: _rft_grader_v1_ValidateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  Validate(argument: _rft_grader_v1_ValidateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  Validate(argument: _rft_grader_v1_ValidateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  Validate(argument: _rft_grader_v1_ValidateRequest, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  validate(argument: _rft_grader_v1_ValidateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  validate(argument: _rft_grader_v1_ValidateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  validate(argument: _rft_grader_v1_ValidateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  validate(argument: _rft_grader_v1_ValidateRequest, callback: grpc.requestCallback<_rft_grader_v1_ValidateResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface GraderServiceHandlers extends grpc.UntypedServiceImplementation {
  Grade: grpc.handleUnaryCall<_rft_grader_v1_GradeRequest__Output, _rft_grader_v1_GradeResponse>;
  
  GradeBatch: grpc.handleBidiStreamingCall<_rft_grader_v1_GradeBatchRequest__Output, _rft_grader_v1_GradeBatchResponse>;
  
  Validate: grpc.handleUnaryCall<_rft_grader_v1_ValidateRequest__Output, _rft_grader_v1_ValidateResponse>;
  
}

export interface GraderServiceDefinition extends grpc.ServiceDefinition {
  Grade: MethodDefinition<_rft_grader_v1_GradeRequest, _rft_grader_v1_GradeResponse, _rft_grader_v1_GradeRequest__Output, _rft_grader_v1_GradeResponse__Output>
  GradeBatch: MethodDefinition<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchResponse, _rft_grader_v1_GradeBatchRequest__Output, _rft_grader_v1_GradeBatchResponse__Output>
  Validate: MethodDefinition<_rft_grader_v1_ValidateRequest, _rft_grader_v1_ValidateResponse, _rft_grader_v1_ValidateRequest__Output, _rft_grader_v1_ValidateResponse__Output>
}
