// Original file: proto/grader.proto


export interface ValidateRequest {
  'grader_json'?: (string);
}

export interface ValidateRequest__Output {
  'grader_json': (string);
}
