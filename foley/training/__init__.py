"""Mapper training: (CLIP, CLAP) pair files, resumable training checkpoints, synthetic pairs, and figures.

May import: foley.config, foley.storage, foley.models.
"""
