"""A tokenizer that builds with no hub access, for the text branches this project never feeds real text.

laion_clap insists on building a RoBERTa tokenizer even when only audio is embedded, and AudioLDMPipeline wants a
tokenizer object even when it is given embeddings; this one covers any text byte by byte.
"""

from __future__ import annotations

from tokenizers.pre_tokenizers import ByteLevel
from transformers import RobertaTokenizer


def byte_level_tokenizer(max_length: int = 64):
    """A RoBERTa tokenizer over single bytes (no merges): builds offline, tokenizes any text."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: index for index, token in enumerate(specials + sorted(ByteLevel.alphabet()))}
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
