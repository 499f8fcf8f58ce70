"""Small MLX model directories with random weights, written through mlx-lm itself.

make_tokenizer() trains a byte-level BPE tokenizer (the `tokenizers` library) on a fixed
text with Qwen2's pre-tokenizer and ChatML special tokens, and writes tokenizer.json and
tokenizer_config.json (with a chat template). make_model() builds the mlx-lm model class
of an architecture from a small config, gives every weight (norms included) random
values, casts it to a float dtype, quantizes it with mlx's nn.quantize when asked, and
saves it the way mlx_lm.convert does (mlx_lm.utils.save_model + save_config): config.json,
model.safetensors and model.safetensors.index.json. mlx_logits() runs the same directory
with mlx-lm on the CPU.
"""
import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map_with_path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"\p{N}|", r"\p{N}{1,3}|", 1)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TRAIN_TEXT = """The quick brown fox jumps over the lazy dog. Pensieve reads MLX model
directories: config.json, model.safetensors and tokenizer.json. Numbers like 12345 and
3.14159, code like `def f(x): return x * 2`, and words in other scripts: café, naïve,
Grüße, 東京, Москва, ελληνικά. Question? Answer! Lists: a, b, c; (parentheses) [brackets]
{braces} <angles>. Tabs\tand newlines\n\n and   spaces.""" * 3


def make_tokenizer(out_dir, vocab_size=400, split=QWEN2_SPLIT):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAIN_TEXT], trainer)
    tok.add_special_tokens(SPECIALS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML,
        "model_max_length": 2048}))
    return tok.get_vocab_size()


def base_config(arch, vocab_size):
    c = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
             vocab_size=vocab_size, max_position_embeddings=2048, rope_theta=10000.0,
             tie_word_embeddings=True)
    if arch == "llama":
        c.update(model_type="llama", tie_word_embeddings=False)
    elif arch == "qwen2":
        c.update(model_type="qwen2")
    elif arch == "qwen3":
        c.update(model_type="qwen3", head_dim=32)
    elif arch == "phi3":
        c.update(model_type="phi3", tie_word_embeddings=False, num_key_value_heads=4)
    elif arch == "gemma3":
        c.update(model_type="gemma3_text", head_dim=32, query_pre_attn_scalar=24,
                 sliding_window=8, sliding_window_pattern=6, rope_local_base_freq=10000.0,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, num_hidden_layers=7)
    else:
        raise ValueError(arch)
    return c


def make_model(out_dir, arch, tokenizer_dir, bits=None, group_size=64, dtype="bfloat16",
               seed=0, config_extra=None, quant_predicate=None):
    """Write an MLX model directory; returns its path. quant_predicate(path, module) may
    give some modules other bits or group sizes (a dict) or leave them float (False), as
    mlx-lm's mixed recipes do."""
    from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_dir) / f, out_dir / f)
    vocab = json.loads((out_dir / "tokenizer.json").read_text())
    n_vocab = len(vocab["model"]["vocab"]) + len(vocab["added_tokens"])
    config = base_config(arch, n_vocab)
    config.update(config_extra or {})
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    mx.random.seed(seed)

    def init(path, w):
        if path.endswith("norm.weight"):  # norms: around 1 (gemma3: around 0, it adds 1)
            base = 0.0 if arch == "gemma3" else 1.0
            return base + 0.1 * mx.random.normal(w.shape)
        if path.endswith("bias"):
            return 0.1 * mx.random.normal(w.shape)
        if "embed_tokens" in path:
            return mx.random.normal(w.shape) * (0.05 if arch == "gemma3" else 1.0)
        return mx.random.normal(w.shape) * (1.0 / np.sqrt(w.shape[-1]))
    model.update(tree_map_with_path(init, model.parameters()))
    model.set_dtype(getattr(mx, dtype))
    if bits:
        model, config = quantize_model(model, config, group_size, bits,
                                       quant_predicate=quant_predicate)
    mx.eval(model.parameters())
    save_model(out_dir, model)
    config["torch_dtype"] = dtype
    save_config(config, config_path=out_dir / "config.json")
    return out_dir


def gguf_tokenizer(gguf_path, out, pre):
    """tokenizer.json (+ config) of a GGUF vocabulary, as the Hugging Face original has it."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models as tm, normalizers
    from tokenizers import pre_tokenizers as pt
    r = GGUFReader(str(gguf_path))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(tm.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama3")))
    if pre == "smollm":
        tok.pre_tokenizer = pt.Sequence([pt.Digits(individual_digits=True),
                                         pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        split = LLAMA3_SPLIT if pre == "llama3" else QWEN2_SPLIT
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pt.Sequence([pt.Split(Regex(split), behavior="isolated"),
                                         pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # added tokens: from the first control token on (llama.cpp's converter also marks some
    # ordinary vocabulary entries that look special, such as Qwen's "</s>", user-defined)
    first_control = min(i for i, ty in enumerate(types) if ty == 3)
    added = [(i, t) for i, (t, ty) in enumerate(zip(tokens, types))
             if ty != 1 and i >= first_control]
    tok.add_tokens([AddedToken(t, special=True) for _, t in added])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    spec = json.loads((out / "tokenizer.json").read_text())
    for a in spec["added_tokens"]:  # the ids of the GGUF (added tokens follow the vocab)
        assert tokens[a["id"]] == a["content"]
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64,
        "num_hidden_layers": 1, "intermediate_size": 64, "num_attention_heads": 4,
        "vocab_size": len(tokens)}))
    return tok


GGUF_TO_HF = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
              "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
              "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def gguf_to_hf(gguf_path, out, dtype="bfloat16"):
    """A Hugging Face checkpoint (safetensors, config.json, tokenizer files) of a qwen2 GGUF:
    every tensor dequantized and stored in `dtype`, names as transformers has them."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(str(gguf_path))
    f = lambda k: r.fields[k].contents()  # noqa: E731
    assert f("general.architecture") == "qwen2"
    out = Path(out)
    tok = gguf_tokenizer(gguf_path, out, "qwen2")
    weights = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(list(reversed(t.shape.tolist())))
        parts = t.name.split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}.{parts[3]}"
        else:
            name = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                    "output": "lm_head"}[parts[0]] + "." + parts[1]
        weights[name] = mx.array(a).astype(getattr(mx, dtype))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    n_vocab = len(f("tokenizer.ggml.tokens"))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": int(f("qwen2.embedding_length")),
        "num_hidden_layers": int(f("qwen2.block_count")),
        "intermediate_size": int(f("qwen2.feed_forward_length")),
        "num_attention_heads": int(f("qwen2.attention.head_count")),
        "num_key_value_heads": int(f("qwen2.attention.head_count_kv")),
        "max_position_embeddings": int(f("qwen2.context_length")),
        "rms_norm_eps": float(f("qwen2.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(f("qwen2.rope.freq_base")), "vocab_size": n_vocab,
        "tie_word_embeddings": "lm_head.weight" not in weights, "torch_dtype": dtype,
        "bos_token_id": 151643, "eos_token_id": 151645}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": f("tokenizer.chat_template"), "model_max_length": 32768}))
    return tok


def load(path):
    from mlx_lm.utils import load_model
    model, _ = load_model(Path(path))
    return model


def mlx_logits(path, tokens, model=None, upcast=False):
    """Logits [len(tokens), n_vocab] of one forward pass of mlx-lm on the CPU, as f32;
    upcast: with the float parameters cast to f32 first (exact for f16/bf16), so mlx-lm
    computes in f32."""
    mx.set_default_device(mx.cpu)
    model = model or load(path)
    if upcast:
        model.set_dtype(mx.float32)
    out = model(mx.array([tokens]))
    return np.array(out[0].astype(mx.float32))


def mlx_greedy(path, tokens, n, model=None):
    mx.set_default_device(mx.cpu)
    model = model or load(path)
    seq = list(tokens)
    for _ in range(n):
        out = model(mx.array([seq]))
        seq.append(int(mx.argmax(out[0, -1]).item()))
    return seq[len(tokens):]
