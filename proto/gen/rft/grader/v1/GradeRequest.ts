// Original file: proto/grader.proto

import type { SampleInput as _rft_grader_v1_SampleInput, SampleInput__Output as _rft_grader_v1_SampleInput__Output } from '../../../rft/grader/v1/SampleInput.js';

export interface GradeRequest {
  'grader_json'?: (string);
  'item_json'?: (string);
  'sample'?: (_rft_grader_v1_SampleInput | null);
}

export interface GradeRequest__Output {
  'grader_json': (string);
  'item_json': (string);
  'sample': (_rft_grader_v1_SampleInput__Output | null);
}
