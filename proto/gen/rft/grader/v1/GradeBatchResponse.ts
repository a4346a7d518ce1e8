// Original file: proto/grader.proto

import type { GradeResult as _rft_grader_v1_GradeResult, GradeResult__Output as _rft_grader_v1_GradeResult__Output } from '../../../rft/grader/v1/GradeResult.js';

export interface GradeBatchResponse {
  'results'?: (_rft_grader_v1_GradeResult)[];
}

export interface GradeBatchResponse__Output {
  'results': (_rft_grader_v1_GradeResult__Output)[];
}
