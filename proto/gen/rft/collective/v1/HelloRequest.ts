// Original file: proto/collective.proto


export interface HelloRequest {
  'job'?: (string);
  'rank'?: (number);
  'world_size'?: (number);
}

export interface HelloRequest__Output {
  'job': (string);
  'rank': (number);
  'world_size': (number);
}
