"""Models: CLIP, AudioLDM and its CLAP text encoder, the V2A-Mapper (architecture and checkpoint files), the
zero-shot mapper, and laion_clap's audio encoder, each loaded through its library's own loader from a hub id, a
local path or an s3:// prefix.

May import: foley.config, foley.storage (for node-local copies of s3:// weights).
"""
