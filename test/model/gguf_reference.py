"""References for test/model/gguf.test.ts: transformers' own GGUF loading and gguf-py's quantization.

usage:
  gguf_reference.py model GGUF OURS_DIR REQUEST_JSON
      load GGUF with transformers (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)) and OURS_DIR (our
      import, safetensors); print config fields, the largest |difference| per tensor, and for each prompt the
      last-position logits and a greedy continuation of the GGUF-loaded model.
  gguf_reference.py tokenizer GGUF OURS_DIR REQUEST_JSON
      AutoTokenizer.from_pretrained(dir, gguf_file=...): ids of each string, as transformers builds the
      tokenizer and with the pre-tokenizer of the model's own tokenizer.json (see trainer/README.md, GGUF), and
      the chat template rendering of the request's messages; and the ids of AutoTokenizer on OURS_DIR.
  gguf_reference.py quants OUT_DIR
      for each quant type, a small GGUF (GGUFWriter, gguf.quants.quantize) and the float32 values
      gguf.quants.dequantize gives for it (TYPE.f32, raw little-endian).
  gguf_reference.py bad OUT_DIR
      small GGUFs with an unsupported architecture and an unsupported tensor type.
"""
import json
import os
import sys

import numpy as np


def split_gguf(path):
    return os.path.dirname(os.path.abspath(path)), os.path.basename(path)


def model_mode(gguf_path, ours, request):
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    d, name = split_gguf(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    cfg = model.config
    fields = [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
        "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act",
    ]
    config = {f: getattr(cfg, f, None) for f in fields}
    rope = getattr(cfg, "rope_parameters", None) or {}
    config["rope_theta"] = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    mine = load_file(os.path.join(ours, "model.safetensors"))
    diffs = {}
    for k, v in mine.items():
        ref = state.get(k)
        if ref is None or ref.shape != v.shape:
            diffs[k] = None if ref is None else f"shape {list(ref.shape)} vs {list(v.shape)}"
        else:
            diffs[k] = float(np.max(np.abs(ref - v)))
    missing = sorted(k for k in state if k not in mine and not (cfg.tie_word_embeddings and k == "lm_head.weight"))
    out = {"config": config, "diffs": diffs, "missing": missing, "prompts": []}
    with torch.no_grad():
        for ids in request["prompts"]:
            logits = model(torch.tensor([ids])).logits[0, -1].double().tolist()
            out["prompts"].append({"logits": logits})
        g = model.generate(
            torch.tensor([request["greedy"]]), max_new_tokens=request["new_tokens"], do_sample=False,
            eos_token_id=None, pad_token_id=cfg.pad_token_id,
        )
        out["greedy"] = g[0, len(request["greedy"]):].tolist()
    print(json.dumps(out))


def tokenizer_mode(gguf_path, ours, request):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    d, name = split_gguf(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    plain = [tok.encode(s, add_special_tokens=False) for s in request["strings"]]
    chat = tok.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
    # SmolLM2's own tokenizer.json (and llama.cpp's "smollm" pre-tokenizer) split every numeric character
    # before the GPT-2 regex; transformers 5.23's GGUF loader has no entry for "smollm" and leaves this out.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    model_own = [tok.encode(s, add_special_tokens=False) for s in request["strings"]]
    mine = AutoTokenizer.from_pretrained(ours)
    ours_ids = [mine.encode(s, add_special_tokens=False) for s in request["strings"]]
    ours_chat = mine.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
    print(json.dumps({"transformers_gguf": plain, "model_pretokenizer": model_own, "chat": chat,
                      "ours_in_transformers": ours_ids, "ours_chat": ours_chat,
                      "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token}))


QUANT_SHAPE = (8, 512)  # rows of 512: whole blocks for every type (32 and 256 elements)


# gguf-py 0.19 dequantizes the K-quants but cannot quantize them: their blocks are random bytes with finite
# fp16 scales at these byte offsets of each block (Q4_K: d, dmin; Q6_K: d).
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_k_blocks(rng, qt, shape):
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qt]
    n_blocks = shape[0] * shape[1] // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in K_SCALES[qt.name]:
        scale = (rng.uniform(0.001, 0.05, size=n_blocks) * rng.choice([-1, 1], size=n_blocks)).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(shape[0], shape[1] // block * size)


def add_every_value_type(w):
    """One metadata key per GGUF value type (the test checks what we read back)."""
    w.add_uint8("test.u8", 250)
    w.add_int8("test.i8", -7)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -32000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo ✓")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_array("test.strs", ["a", "bc", ""])
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.nested", [[1, 2], [3]])


def quants_mode(out_dir):
    import gguf
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(7)
    x = (rng.standard_normal(QUANT_SHAPE) * 0.7).astype(np.float32)
    x[0, :40] *= 20  # a block of larger values
    x[1, :32] = 0.0  # an all-zero block
    names = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]
    for n in names:
        qt = gguf.GGMLQuantizationType[n]
        if n in K_SCALES:
            data = random_k_blocks(rng, qt, QUANT_SHAPE)
        else:
            data = x if n == "F32" else (x.astype(np.float16) if n == "F16" else quantize(x, qt))
        w = gguf.GGUFWriter(os.path.join(out_dir, f"{n}.gguf"), "llama")
        add_every_value_type(w)
        if n in ("F32", "F16"):
            w.add_tensor("t", data)
        else:
            w.add_tensor("t", data, raw_shape=data.shape, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        dequantize(data if n not in ("F32", "F16") else data.view(np.uint8), qt).astype(np.float32).tofile(
            os.path.join(out_dir, f"{n}.f32"))
    print(json.dumps({"types": names, "shape": list(QUANT_SHAPE)}))


def bad_mode(out_dir):
    import gguf

    x = np.ones((4, 256), dtype=np.float32)
    w = gguf.GGUFWriter(os.path.join(out_dir, "arch.gguf"), "mamba")
    w.add_tensor("t", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    w = gguf.GGUFWriter(os.path.join(out_dir, "type.gguf"), "llama")
    q = random_k_blocks(np.random.default_rng(1), gguf.GGMLQuantizationType.Q5_K, x.shape)
    w.add_tensor("blk.0.attn_q.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q5_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(json.dumps({"ok": True}))


def main():
    mode = sys.argv[1]
    if mode == "model":
        model_mode(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif mode == "tokenizer":
        tokenizer_mode(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif mode == "quants":
        quants_mode(sys.argv[2])
    elif mode == "bad":
        bad_mode(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
