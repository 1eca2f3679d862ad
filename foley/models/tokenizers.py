"""A tokenizer that builds with no hub access, for the text branches this project never feeds real text.

laion_clap insists on building a RoBERTa tokenizer even when only audio is embedded, and the random AudioLDM
folders of the tests need one for their CLAP text branch; this one covers any text byte by byte. The tiny source
detectors of the tests get a CLIP tokenizer of the same kind.
"""

from __future__ import annotations

from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer, RobertaTokenizer


def byte_level_tokenizer(max_length: int = 64):
    """A RoBERTa tokenizer over single bytes (no merges): builds offline, tokenizes any text."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: index for index, token in enumerate(specials + sorted(ByteLevel.alphabet()))}
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def byte_level_clip_tokenizer():
    """A CLIP tokenizer over single bytes (each alone and word-final, no merges), for tiny test detectors."""
    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [char + "</w>" for char in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=[])
