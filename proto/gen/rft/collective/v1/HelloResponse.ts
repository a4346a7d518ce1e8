// Original file: proto/collective.proto


export interface HelloResponse {
  'job'?: (string);
  'rank'?: (number);
  'world_size'?: (number);
}

export interface HelloResponse__Output {
  'job': (string);
  'rank': (number);
  'world_size': (number);
}
