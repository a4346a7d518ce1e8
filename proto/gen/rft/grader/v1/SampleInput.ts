// Original file: proto/grader.proto


export interface SampleInput {
  'output_text'?: (string);
  'output_tools_json'?: (string);
  'choices_json'?: (string);
  'json_required'?: (boolean);
}

export interface SampleInput__Output {
  'output_text': (string);
  'output_tools_json': (string);
  'choices_json': (string);
  'json_required': (boolean);
}
