// Original file: proto/grader.proto


export interface ValidateResponse {
  'valid'?: (boolean);
  'grader_json'?: (string);
  'error'?: (string);
  'param'?: (string);
}

export interface ValidateResponse__Output {
  'valid': (boolean);
  'grader_json': (string);
  'error': (string);
  'param': (string);
}
