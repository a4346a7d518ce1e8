// Original file: proto/collective.proto


export interface LinkRequest {
  'job'?: (string);
  'rank'?: (number);
  'nonce'?: (Buffer | Uint8Array | string);
  'proof'?: (Buffer | Uint8Array | string);
}

export interface LinkRequest__Output {
  'job': (string);
  'rank': (number);
  'nonce': (Buffer);
  'proof': (Buffer);
}
