// Original file: proto/collective.proto


export interface HelloRequest {
  'job'?: (string);
  'rank'?: (number);
  'world_size'?: (number);
  'nonce'?: (Buffer | Uint8Array | string);
  'challenge'?: (Buffer | Uint8Array | string);
  'proof'?: (Buffer | Uint8Array | string);
}

export interface HelloRequest__Output {
  'job': (string);
  'rank': (number);
  'world_size': (number);
  'nonce': (Buffer);
  'challenge': (Buffer);
  'proof': (Buffer);
}
