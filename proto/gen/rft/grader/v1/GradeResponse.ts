// Original file: proto/grader.proto


export interface GradeResponse {
  'reward'?: (number | string);
  'response_json'?: (string);
}

export interface GradeResponse__Output {
  'reward': (number);
  'response_json': (string);
}
