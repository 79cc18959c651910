"""Tiny random Llama models for tests, examples and benchmarks that must run in seconds on a CPU with no hub.

Their weights are larger than the default init, so their next-token distributions are peaked and depend on the
input (the default init is nearly uniform): speculative decoding on them accepts some drafts and rejects others.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int = 0, vocab: int = 96, layers: int = 4, hidden: int = 32) -> LlamaForCausalLM:
    """A frozen random Llama (eval mode, no gradients) with tied embeddings and no special token ids."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5 / p.shape[1] ** 0.25)
    model.requires_grad_(False)
    return model


def save_tiny_model_dir(path: str | Path, words: list[str], seed: int = 0, eos: bool = True) -> None:
    """Write a directory `load_model` reads: a tiny Llama plus a real word-level tokenizer over `words` (ids:
    <unk>, then <eos> if `eos`, then the words). Without an EOS token every answer runs to its token limit."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>"] if eos else ["<unk>"]
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"eos_token": "<eos>"} if eos else {}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **kwargs)
    tiny_llama(seed=seed, vocab=len(vocab)).save_pretrained(path)
    tokenizer.save_pretrained(path)


def char_tokenizer():
    """A real character-level tokenizer: ids 0..94 are the printable ASCII characters, 95 is "\\n", 96 <unk>,
    97 <eos>. It encodes and decodes such text exactly (one token per character, never a partial character), so
    text-level logic (steps, judges) runs on tiny models: `tiny_llama(vocab=98)`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {ch: i for i, ch in enumerate([*chars, "<unk>", "<eos>"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
