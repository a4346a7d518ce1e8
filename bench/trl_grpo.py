"""The sort-digits RFT job run by Hugging Face TRL's GRPOTrainer on this CPU: the baseline of bench/rft.ts.

    python bench/trl_grpo.py --model DIR --train examples/sort-digits/train.jsonl --steps 10 --threads 1
    python bench/trl_grpo.py --task city --model DIR --train examples/smollm2-city/train.jsonl \
        --prompts 4 --generations 4 --max-completion 12 --temperature 0.7 --lr 1e-5 --steps 3 --threads 2

Loads the warm-started model (Hugging Face directory, ChatML chat template) with transformers, runs
GRPOTrainer with the example's rft.yaml settings (8 prompts x 8 generations per step, 16 completion tokens,
temperature 1, loss dapo with clip 0.2/0.28, beta 0, lr 1e-4 x 10) and the example's grader as a Python
reward function (`--task city`: examples/smollm2-city's multi grader, 0.3 x string_check ilike + 0.7 x
its python grader). Times `--steps` steps after `--warmup` warm-up steps and prints one JSON line (prefixed
`TRL_RESULT `) with steps/s, s/step, CPU s/step, samples/s and a breakdown (generation / reward / training).
"""

import argparse
import json
import os
import re
import resource
import sys
import time

# Keep TRL/transformers quiet and offline: everything needed is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=["sort-digits", "city"], default="sort-digits", help="which example's reward")
    p.add_argument("--model", required=True, help="warm-started Hugging Face model directory")
    p.add_argument("--train", required=True, help="RFT training JSONL (messages + answer)")
    p.add_argument("--out", required=True, help="scratch output directory")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (1e-4 x learningRateMultiplier)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (batchSize)")
    p.add_argument("--generations", type=int, default=8, help="samples per prompt (num_generations)")
    p.add_argument("--max-completion", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


args = parse_args()

import torch  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)

import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

transformers.logging.set_verbosity_error()

ANSWER = re.compile(r"Answer:\s*(\d+)")
timing = {"generate": 0.0, "reward": 0.0, "gen_and_score": 0.0}


def sort_digits_reward(completions, answer, **_):
    """rft.yaml's multi grader: 0.1 * string_check(like "Answer:") + 0.9 * fraction of right digits."""
    t0 = time.perf_counter()
    out = []
    for c, want in zip(completions, answer):
        text = c[-1]["content"] if isinstance(c, list) else c
        fmt = 1.0 if "answer:" in text.lower() else 0.0  # string_check "like": case-insensitive contains
        m = ANSWER.search(text)
        correct = 0.0
        if m and len(m.group(1)) == len(want):
            correct = sum(a == b for a, b in zip(m.group(1), want)) / len(want)
        out.append(0.1 * fmt + 0.9 * correct)
    timing["reward"] += time.perf_counter() - t0
    return out


TRAILING = re.compile(r"[\s.!\"']+$")


def city_reward(completions, answer, **_):
    """examples/smollm2-city/rft.yaml's multi grader: 0.3 * mentioned + 0.7 * exact.

    mentioned: string_check ilike (the answer is a case-insensitive substring of the output);
    exact: the manifest's python grader, verbatim in effect.
    """
    t0 = time.perf_counter()
    out = []
    for c, city in zip(completions, answer):
        text = c[-1]["content"] if isinstance(c, list) else c
        mentioned = 1.0 if city.lower() in text.lower() else 0.0
        o = TRAILING.sub("", text.strip())
        if o.lower() == city.lower():
            exact = 1.0
        elif city.lower() not in o.lower():
            exact = 0.0
        else:
            exact = len(city) / len(o)
        out.append(0.3 * mentioned + 0.7 * exact)
    timing["reward"] += time.perf_counter() - t0
    return out


class TimedGRPOTrainer(GRPOTrainer):
    """Adds up the time spent generating and in generation + scoring (the rest of a step is training)."""

    def _generate(self, prompts):
        t0 = time.perf_counter()
        try:
            return super()._generate(prompts)
        finally:
            timing["generate"] += time.perf_counter() - t0

    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            timing["gen_and_score"] += time.perf_counter() - t0


class StepClock(TrainerCallback):
    """Wall and CPU time at the end of every step, the timing breakdown and the logged metrics per step."""

    def __init__(self):
        self.marks = []  # (step, wall, cpu, timing copy)
        self.logs = []

    def on_step_end(self, _args, state, _control, **_):
        self.marks.append((state.global_step, time.perf_counter(), time.process_time(), dict(timing)))

    def on_log(self, _args, _state, _control, logs=None, **_):
        if logs:
            self.logs.append(dict(logs))


def main():
    total = args.warmup + args.steps
    rows = []
    with open(args.train) as f:
        for line in f:
            r = json.loads(line)
            rows.append({"prompt": r["messages"], "answer": r["answer"]})
    rows = rows[: total * args.prompts]
    dataset = Dataset.from_list(rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    completions_per_step = args.prompts * args.generations
    config = GRPOConfig(
        output_dir=args.out,
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        max_steps=total,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        # One optimizer step per generation batch of 8 prompts x 8 completions, as ours.
        per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1,
        generation_batch_size=completions_per_step,
        num_generations=args.generations,
        num_iterations=1,
        max_completion_length=args.max_completion,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        scale_rewards="group",
        use_vllm=False,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        shuffle_dataset=True,
    )
    clock = StepClock()
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=[city_reward if args.task == "city" else sort_digits_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.train()

    marks = clock.marks
    if len(marks) < total:
        sys.exit(f"expected {total} steps, got {len(marks)}")
    _, w0, c0, t0 = marks[args.warmup - 1] if args.warmup > 0 else (0, None, None, None)
    _, w1, c1, t1 = marks[total - 1]
    if w0 is None:
        sys.exit("--warmup must be >= 1 (the first step's start is not observed)")
    n = args.steps
    wall = w1 - w0
    cpu = c1 - c0
    gen = t1["generate"] - t0["generate"]
    rew = t1["reward"] - t0["reward"]
    gs = t1["gen_and_score"] - t0["gen_and_score"]
    step_logs = [l for l in clock.logs if "loss" in l or "reward" in l][args.warmup : total]
    mean_len = [l.get("completions/mean_length") for l in step_logs if l.get("completions/mean_length") is not None]
    completion_tokens = sum(mean_len) * completions_per_step
    rewards = [l["reward"] for l in step_logs if "reward" in l]
    zero_std = [l.get("frac_reward_zero_std") for l in step_logs if l.get("frac_reward_zero_std") is not None]
    result = {
        "threads": args.threads,
        "steps": n,
        "steps_per_s": n / wall,
        "seconds_per_step": wall / n,
        "cpu_seconds_per_step": cpu / n,
        "samples_per_s": n * completions_per_step / wall,
        "completion_tokens_per_step": completion_tokens / n if mean_len else None,
        "train_tokens_per_s": completion_tokens / wall if mean_len else None,
        "breakdown_s_per_step": {
            "generation": gen / n,
            "reward": rew / n,
            "other_scoring": (gs - gen - rew) / n,
            "training": (wall - gs) / n,
        },
        "reward_mean": sum(rewards) / len(rewards) if rewards else None,
        "frac_reward_zero_std": sum(zero_std) / len(zero_std) if zero_std else None,
        "versions": {"trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("TRL_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
