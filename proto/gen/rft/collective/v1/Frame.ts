// Original file: proto/collective.proto

import type { Long } from '@grpc/proto-loader';

// Original file: proto/collective.proto

export const _rft_collective_v1_Frame_Kind = {
  DATA: 'DATA',
  ABORT: 'ABORT',
  AUTH: 'AUTH',
} as const;

export type _rft_collective_v1_Frame_Kind =
  | 'DATA'
  | 0
  | 'ABORT'
  | 1
  | 'AUTH'
  | 2

export type _rft_collective_v1_Frame_Kind__Output = typeof _rft_collective_v1_Frame_Kind[keyof typeof _rft_collective_v1_Frame_Kind]

export interface Frame {
  'kind'?: (_rft_collective_v1_Frame_Kind);
  'op'?: (number | string | Long);
  'step'?: (number);
  'offset'?: (number | string | Long);
  'data'?: (Buffer | Uint8Array | string);
  'total'?: (number | string | Long);
  'rank'?: (number);
  'error'?: (string);
}

export interface Frame__Output {
  'kind': (_rft_collective_v1_Frame_Kind__Output);
  'op': (number);
  'step': (number);
  'offset': (number);
  'data': (Buffer);
  'total': (number);
  'rank': (number);
  'error': (string);
}
