"""PEFT reference for test/model/lora.test.ts (.venv-model-test: torch, transformers, peft).

usage:
  lora_reference.py logits BASE_DIR ADAPTER_DIR IDS_JSON   load BASE with transformers and ADAPTER with
                                                           peft.PeftModel.from_pretrained; print its logits
  lora_reference.py make BASE_DIR OUT_DIR IDS_JSON         make a LoRA adapter with peft on BASE (r=4,
                                                           alpha=8, q/v/up/down, random B), save_pretrained(OUT),
                                                           print the adapted model's logits
"""
import json
import sys

import torch


def logits_for(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].double().tolist()


def main():
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    mode = sys.argv[1]
    base = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
    if mode == "logits":
        model = PeftModel.from_pretrained(base, sys.argv[3])
        model.eval()
        print(json.dumps({"logits": logits_for(model, json.loads(sys.argv[4]))}))
    elif mode == "make":
        torch.manual_seed(99)
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                         task_type="CAUSAL_LM")
        model = get_peft_model(base, cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
        model.eval()
        model.save_pretrained(sys.argv[3])
        print(json.dumps({"logits": logits_for(model, json.loads(sys.argv[4]))}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
