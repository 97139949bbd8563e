"""Tiny, randomly initialised transformers models and a byte-level tokenizer, built from configs.

For tests and examples that must run offline in seconds: nothing is downloaded. The tokenizer
is byte-level BPE with no merges (one token per byte, 256 + 3 special tokens), so it encodes any
text. Models are seeded, so two builds with the same arguments are identical.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TINY_FAMILIES", "tiny_causal_lm", "tiny_tokenizer"]

#: Families :func:`tiny_causal_lm` can build (transformers config class names).
TINY_FAMILIES: tuple[str, ...] = ("llama", "gpt2", "qwen2", "gemma2", "mistral")


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (vocab 259: ``<pad>``, ``<bos>``, ``<eos>`` and 256 bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        bos_token="<bos>", eos_token="<eos>")
    tokenizer.padding_side = "left"
    return tokenizer


def _config(family: str, vocab: int) -> Any:
    import transformers as tf

    common = {"vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    llama_like = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2,
                  "max_position_embeddings": 256, **common}
    if family == "llama":
        return tf.LlamaConfig(**llama_like)
    if family == "mistral":
        return tf.MistralConfig(**llama_like)
    if family == "qwen2":
        return tf.Qwen2Config(**llama_like)
    if family == "gemma2":
        return tf.Gemma2Config(head_dim=8, **llama_like)
    if family == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    raise ValueError(f"unknown tiny family {family!r}; use one of {TINY_FAMILIES}")


def tiny_causal_lm(family: str = "llama", seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a 2-layer, width-32 causal LM of ``family``, in eval mode."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer)))
    model.config.name_or_path = f"tiny-{family}"
    return model.eval(), tokenizer
