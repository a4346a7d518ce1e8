// Original file: proto/grader.proto

import type { GradeItem as _rft_grader_v1_GradeItem, GradeItem__Output as _rft_grader_v1_GradeItem__Output } from '../../../rft/grader/v1/GradeItem.js';

export interface GradeBatchRequest {
  'grader_json'?: (string);
  'items'?: (_rft_grader_v1_GradeItem)[];
}

export interface GradeBatchRequest__Output {
  'grader_json': (string);
  'items': (_rft_grader_v1_GradeItem__Output)[];
}
