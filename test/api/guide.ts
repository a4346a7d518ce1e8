/** The RFT guide's security-policy example (reference §5, §6.4): its rows and its job request, sized for a tiny model. */
export const BASE = "o4-mini-2025-04-16";

const qa = (q: string, compliant: string, explanation: string) =>
  JSON.stringify({
    messages: [
      { role: "developer", content: "Answer with JSON: compliant (yes/no) and explanation." },
      { role: "user", content: q },
    ],
    compliant,
    explanation,
  });
export const TRAIN = [
  qa("Is data encrypted at rest?", "yes", "Storage uses AES-256."),
  qa("Do we keep logs for a year?", "no", "Logs are kept 90 days."),
  qa("Is MFA required for admins?", "yes", "SSO enforces MFA."),
  qa("Are backups tested?", "yes", "Quarterly restore drills."),
];
export const VALID = [
  qa("Is TLS 1.0 allowed?", "no", "Only TLS 1.2+."),
  qa("Are laptops encrypted?", "yes", "FileVault."),
];

/** The RFT guide's job request (security-policy example), with a tiny model's hyperparameters. */
export function jobRequest(training_file: string, validation_file: string, hyper: Record<string, unknown> = {}) {
  return {
    model: BASE,
    training_file,
    validation_file,
    suffix: "security-qa",
    seed: 42,
    metadata: { team: "ml" },
    method: {
      type: "reinforcement" as const,
      reinforcement: {
        grader: {
          type: "multi" as const,
          name: "combo",
          graders: {
            label: {
              type: "string_check",
              name: "label",
              input: "{{sample.output_json.compliant}}",
              reference: "{{item.compliant}}",
              operation: "eq",
            },
            why: {
              type: "text_similarity",
              name: "why",
              input: "{{sample.output_json.explanation}}",
              reference: "{{item.explanation}}",
              evaluation_metric: "fuzzy_match",
            },
          },
          calculate_output: "0.7 * label + 0.3 * why",
        },
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "answer",
            strict: true,
            schema: {
              type: "object",
              properties: { compliant: { type: "string" }, explanation: { type: "string" } },
              required: ["compliant", "explanation"],
              additionalProperties: false,
            },
          },
        },
        hyperparameters: {
          n_epochs: 1,
          batch_size: 2,
          eval_interval: 1,
          eval_samples: 1,
          compute_multiplier: 0.5,
          max_completion_tokens: 4, // one of this server's extra knobs, snake_cased
          ...hyper,
        },
      },
    },
  };
}
