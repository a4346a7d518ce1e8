"""The RFT guide's python flow (security-policy example), unchanged apart from base_url and api_key:
upload both files, create the RFT job with its multi grader, poll, read events and checkpoints, call the model.
Usage: rft_guide.py TRAIN.jsonl VALID.jsonl   (env RFT_API_BASE_URL, RFT_API_KEY; RFT_GUIDE_SKIP_CHAT=1 skips the
chat call). Prints a JSON summary."""
import json
import os
import sys
import time

from openai import OpenAI

client = OpenAI(base_url=os.environ["RFT_API_BASE_URL"], api_key=os.environ["RFT_API_KEY"], max_retries=0)

training_file = client.files.create(file=open(sys.argv[1], "rb"), purpose="fine-tune")
validation_file = client.files.create(file=open(sys.argv[2], "rb"), purpose="fine-tune")

grader = {
    "type": "multi",
    "graders": {
        "label": {
            "type": "string_check",
            "name": "label",
            "input": "{{sample.output_json.compliant}}",
            "reference": "{{item.compliant}}",
            "operation": "eq",
        },
        "why": {
            "type": "text_similarity",
            "name": "why",
            "input": "{{sample.output_json.explanation}}",
            "reference": "{{item.explanation}}",
            "evaluation_metric": "fuzzy_match",
        },
    },
    "calculate_output": "0.7 * label + 0.3 * why",
}
response_format = {
    "type": "json_schema",
    "json_schema": {
        "name": "security_assistant",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"compliant": {"type": "string"}, "explanation": {"type": "string"}},
            "required": ["compliant", "explanation"],
            "additionalProperties": False,
        },
    },
}

job = client.fine_tuning.jobs.create(
    model="o4-mini-2025-04-16",
    training_file=training_file.id,
    validation_file=validation_file.id,
    suffix="security-qa",
    seed=42,
    method={
        "type": "reinforcement",
        "reinforcement": {
            "grader": grader,
            "response_format": response_format,
            "hyperparameters": {
                "n_epochs": 1,
                "batch_size": 2,
                "eval_interval": 1,
                "eval_samples": 1,
                "compute_multiplier": 0.5,
                "reasoning_effort": "low",
                "max_completion_tokens": 4,  # this server's extra knob: a tiny model, a short test
            },
        },
    },
)
statuses = [job.status]
while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(0.5)
    job = client.fine_tuning.jobs.retrieve(job.id)
    if job.status != statuses[-1]:
        statuses.append(job.status)

events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100)
checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
answer = None
if job.fine_tuned_model and not os.environ.get("RFT_GUIDE_SKIP_CHAT"):
    completion = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "Is data encrypted at rest?"}],
        max_tokens=3,
    )
    answer = completion.choices[0].message.content

# The job's eval: one run per validation step, its items the samples.
eval_id = getattr(job, "eval_id", None)
eval_runs = []
if eval_id:
    for run in client.evals.runs.list(eval_id):
        items = client.evals.runs.output_items.list(run.id, eval_id=eval_id)
        eval_runs.append(
            {"name": run.name, "step": run.metadata["step"], "scores": [i.results[0].score for i in items.data]}
        )
valid_means = {e.data["step"]: e.data["scores"].get("valid_reward_mean") for e in events.data if e.type == "metrics"}

print(
    json.dumps(
        {
            "id": job.id,
            "status": job.status,
            "statuses": statuses,
            "error": job.error.model_dump() if job.error else None,
            "fine_tuned_model": job.fine_tuned_model,
            "metrics_steps": [e.data["step"] for e in events.data if e.type == "metrics"],
            "checkpoints": [c.fine_tuned_model_checkpoint for c in checkpoints.data],
            "answer_is_text": isinstance(answer, str),
            "eval_id": eval_id,
            "eval_runs": eval_runs,
            "valid_means": valid_means,
        }
    )
)
