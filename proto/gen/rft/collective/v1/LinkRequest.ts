// Original file: proto/collective.proto


export interface LinkRequest {
  'job'?: (string);
  'rank'?: (number);
}

export interface LinkRequest__Output {
  'job': (string);
  'rank': (number);
}
