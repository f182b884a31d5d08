"""Random-weight models of real architectures, for fast tests and GPU benchmarks.

Spec ``random:<name>``: ``llama``, ``gpt2``, ``qwen2``, ``gemma3`` are a few layers and heads wide
(with grouped-query attention, biases, sliding windows where the architecture has them);
``llama-1b`` is a Llama-shaped 1.2B model and ``llama-8b`` a Llama-3-8B-shaped one (140k positions) for
benchmarks, where timing does not depend on the weights. Weights are drawn from the given seed. The tokenizer is a small byte-level BPE that
headscope trains on text it generates, saved to the cache so the bridge can reload it offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_dir
from ..errors import HeadscopeError
from .files import cache_dir

TOKENIZER_VERSION = "bpe-v1"

_SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, max_position_embeddings=512)

CONFIGS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {**_SMALL, "num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", {**_SMALL, "num_key_value_heads": 2}),
    "gpt2": ("GPT2Config", dict(vocab_size=512, n_embd=64, n_layer=4, n_head=4, n_positions=512)),
    "gemma3": ("Gemma3TextConfig", {**_SMALL, "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 4,
                                    "layer_types": ["sliding_attention", "full_attention"] * 2,
                                    "attn_logit_softcapping": None, "query_pre_attn_scalar": 16}),
    "llama-1b": ("LlamaConfig", dict(vocab_size=32768, hidden_size=2048, intermediate_size=8192,
                                     num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                     max_position_embeddings=32768)),
    "llama-8b": ("LlamaConfig", dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                     rope_theta=500000.0, max_position_embeddings=140000)),
}


def _training_text() -> list[str]:
    subjects = ["The Eiffel Tower", "The river", "A small cat", "My neighbour", "The old library", "Paris",
                "The number seven", "A red car", "The teacher", "Every morning the baker"]
    verbs = ["is located in", "walks to", "looks at", "belongs to", "was built near", "is", "sings about",
             "drives past", "writes about", "sells bread to"]
    objects = ["the city of Paris.", "the green hill.", "a quiet garden.", "the market square.",
               "twelve students.", "the blue sea.", "2 + 3 = 5.", "an open window.", "Rome and Berlin.",
               "the tall tower."]
    lines = [f"{s} {v} {o}" for s in subjects for v in verbs for o in objects]
    lines += [" ".join(str(i + j) for j in range(8)) for i in range(50)]
    return lines


def tokenizer_dir() -> Path:
    """Directory holding the small BPE tokenizer, trained and saved once."""
    target = cache_dir() / "tokenizers" / TOKENIZER_VERSION
    if (target / "tokenizer.json").is_file():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=_SMALL["vocab_size"], special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_training_text(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    with atomic_dir(target) as staging:
        tok.save_pretrained(staging)
    return target


def random_config(name: str) -> tuple[str, dict]:
    """The config class name and arguments of ``random:<name>``; a one-line error for an unknown name."""
    if name not in CONFIGS:
        raise HeadscopeError(f"unknown random model {name!r}; choose one of: {', '.join(sorted(CONFIGS))}")
    return CONFIGS[name]


def build_random_model(name: str, seed: int = 0, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32):
    """A random-weight ``transformers`` causal LM and its tokenizer for ``random:<name>``, built on ``device``."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config_class, kwargs = random_config(name)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    config = getattr(transformers, config_class)(**kwargs, bos_token_id=tokenizer.bos_token_id,
                                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if name == "gpt2" or config_class == "Gemma3TextConfig":
            # transformers zero-initialises some biases and norm weights; random ones exercise more code.
            with torch.no_grad():
                for param_name, param in model.named_parameters():
                    if param_name.endswith("bias") or "norm" in param_name or ".ln_" in param_name:
                        param.normal_(0.0, 0.1)
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer
