"""Reference forward passes with Hugging Face transformers, for test/model/reference.test.ts.

usage:
  reference.py logits DIR IDS_JSON        load DIR with transformers, print {"logits": [[...]...]} for the ids
  reference.py make ARCH DIR IDS_JSON     make a tiny random ARCH (llama|qwen2) model with transformers,
                                          save_pretrained(DIR) as safetensors, print its logits for the ids
  reference.py tokenizer DIR TEXT         load DIR's tokenizer with AutoTokenizer, print ids and the chat rendering
"""
import json
import sys

import torch


def logits_for(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].double().tolist()


def main():
    mode = sys.argv[1]
    if mode == "logits":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
        model.eval()
        print(json.dumps({"logits": logits_for(model, json.loads(sys.argv[3]))}))
    elif mode == "make":
        from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(1234)
        arch = sys.argv[2]
        common = dict(
            vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rope_theta=50000.0, rms_norm_eps=1e-5,
        )
        if arch == "llama":
            cfg = LlamaConfig(**common, tie_word_embeddings=False)
            model = LlamaForCausalLM(cfg)
        else:
            cfg = Qwen2Config(**common, tie_word_embeddings=True)
            model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.1)
        model.eval()
        model.save_pretrained(sys.argv[3], safe_serialization=True)
        print(json.dumps({"logits": logits_for(model, json.loads(sys.argv[4]))}))
    elif mode == "tokenizer":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(sys.argv[2])
        text = sys.argv[3]
        chat = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        print(json.dumps({"ids": tok.encode(text, add_special_tokens=False), "chat": chat,
                          "chat_ids": tok.encode(chat, add_special_tokens=False), "decoded": tok.decode(tok.encode(text))}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
