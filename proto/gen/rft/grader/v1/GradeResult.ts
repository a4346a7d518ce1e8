// Original file: proto/grader.proto

import type { Long } from '@grpc/proto-loader';

export interface GradeResult {
  'id'?: (number | string | Long);
  'reward'?: (number | string);
  'sub_rewards'?: ({[key: string]: number | string});
  'error_flags'?: (string)[];
  'response_json'?: (string);
}

export interface GradeResult__Output {
  'id': (number);
  'reward': (number);
  'sub_rewards': ({[key: string]: number});
  'error_flags': (string)[];
  'response_json': (string);
}
