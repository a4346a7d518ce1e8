// Original file: proto/collective.proto


export interface HelloResponse {
  'job'?: (string);
  'rank'?: (number);
  'world_size'?: (number);
  'data_port'?: (number);
  'nonce'?: (Buffer | Uint8Array | string);
  'proof'?: (Buffer | Uint8Array | string);
}

export interface HelloResponse__Output {
  'job': (string);
  'rank': (number);
  'world_size': (number);
  'data_port': (number);
  'nonce': (Buffer);
  'proof': (Buffer);
}
