import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { GradeBatchRequest as _rft_grader_v1_GradeBatchRequest, GradeBatchRequest__Output as _rft_grader_v1_GradeBatchRequest__Output } from './rft/grader/v1/GradeBatchRequest.js';
import type { GradeBatchResponse as _rft_grader_v1_GradeBatchResponse, GradeBatchResponse__Output as _rft_grader_v1_GradeBatchResponse__Output } from './rft/grader/v1/GradeBatchResponse.js';
import type { GradeItem as _rft_grader_v1_GradeItem, GradeItem__Output as _rft_grader_v1_GradeItem__Output } from './rft/grader/v1/GradeItem.js';
import type { GradeRequest as _rft_grader_v1_GradeRequest, GradeRequest__Output as _rft_grader_v1_GradeRequest__Output } from './rft/grader/v1/GradeRequest.js';
import type { GradeResponse as _rft_grader_v1_GradeResponse, GradeResponse__Output as _rft_grader_v1_GradeResponse__Output } from './rft/grader/v1/GradeResponse.js';
import type { GradeResult as _rft_grader_v1_GradeResult, GradeResult__Output as _rft_grader_v1_GradeResult__Output } from './rft/grader/v1/GradeResult.js';
import type { GraderServiceClient as _rft_grader_v1_GraderServiceClient, GraderServiceDefinition as _rft_grader_v1_GraderServiceDefinition } from './rft/grader/v1/GraderService.js';
import type { SampleInput as _rft_grader_v1_SampleInput, SampleInput__Output as _rft_grader_v1_SampleInput__Output } from './rft/grader/v1/SampleInput.js';
import type { ValidateRequest as _rft_grader_v1_ValidateRequest, ValidateRequest__Output as _rft_grader_v1_ValidateRequest__Output } from './rft/grader/v1/ValidateRequest.js';
import type { ValidateResponse as _rft_grader_v1_ValidateResponse, ValidateResponse__Output as _rft_grader_v1_ValidateResponse__Output } from './rft/grader/v1/ValidateResponse.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  rft: {
    grader: {
      v1: {
        GradeBatchRequest: MessageTypeDefinition<_rft_grader_v1_GradeBatchRequest, _rft_grader_v1_GradeBatchRequest__Output>
        GradeBatchResponse: MessageTypeDefinition<_rft_grader_v1_GradeBatchResponse, _rft_grader_v1_GradeBatchResponse__Output>
        GradeItem: MessageTypeDefinition<_rft_grader_v1_GradeItem, _rft_grader_v1_GradeItem__Output>
        GradeRequest: MessageTypeDefinition<_rft_grader_v1_GradeRequest, _rft_grader_v1_GradeRequest__Output>
        GradeResponse: MessageTypeDefinition<_rft_grader_v1_GradeResponse, _rft_grader_v1_GradeResponse__Output>
        GradeResult: MessageTypeDefinition<_rft_grader_v1_GradeResult, _rft_grader_v1_GradeResult__Output>
        GraderService: SubtypeConstructor<typeof grpc.Client, _rft_grader_v1_GraderServiceClient> & { service: _rft_grader_v1_GraderServiceDefinition }
        SampleInput: MessageTypeDefinition<_rft_grader_v1_SampleInput, _rft_grader_v1_SampleInput__Output>
        ValidateRequest: MessageTypeDefinition<_rft_grader_v1_ValidateRequest, _rft_grader_v1_ValidateRequest__Output>
        ValidateResponse: MessageTypeDefinition<_rft_grader_v1_ValidateResponse, _rft_grader_v1_ValidateResponse__Output>
      }
    }
  }
}

