// Original file: proto/collective.proto


export interface HelloResponse {
  'job'?: (string);
  'rank'?: (number);
  'world_size'?: (number);
  'data_port'?: (number);
}

export interface HelloResponse__Output {
  'job': (string);
  'rank': (number);
  'world_size': (number);
  'data_port': (number);
}
