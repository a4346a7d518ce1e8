// Original file: proto/grader.proto

import type { SampleInput as _rft_grader_v1_SampleInput, SampleInput__Output as _rft_grader_v1_SampleInput__Output } from '../../../rft/grader/v1/SampleInput.js';
import type { Long } from '@grpc/proto-loader';

export interface GradeItem {
  'id'?: (number | string | Long);
  'item_json'?: (string);
  'sample'?: (_rft_grader_v1_SampleInput | null);
}

export interface GradeItem__Output {
  'id': (number);
  'item_json': (string);
  'sample': (_rft_grader_v1_SampleInput__Output | null);
}
