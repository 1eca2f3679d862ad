"""Where a job keeps its own files: one reserved folder, `<output>/_foley/`, beside the outputs that mirror the
inputs' relative paths. Every file the job rewrites or deletes for its own sake lives in it (the manifest and its
journal, staged segments and shard samples, the report, the conditions, the evaluation, the comparisons), so an
input whose output would land there fails its row instead of being published into it.
"""

from __future__ import annotations

BOOKKEEPING_DIR = "_foley"
MANIFEST_DIR = f"{BOOKKEEPING_DIR}/manifest"
SEGMENTS_DIR = f"{BOOKKEEPING_DIR}/segments"
SAMPLES_DIR = f"{BOOKKEEPING_DIR}/samples"  # a shard's samples' outputs, until its output shard holds them
SHARDS_DIR = f"{BOOKKEEPING_DIR}/shards"  # what each published output shard holds (foley.pipeline.shards)
REPORT_DIR = f"{BOOKKEEPING_DIR}/report"
CONDITIONS_DIR = f"{BOOKKEEPING_DIR}/conditions"
EVALUATION_DIR = f"{BOOKKEEPING_DIR}/evaluation"
COMPARISONS_DIR = f"{BOOKKEEPING_DIR}/comparisons"  # jobs.compare's tables, linked from the report
# Where jobs before the reserved folder kept their manifest: read, never written, so their done work stays done.
LEGACY_MANIFEST_DIR = "_manifest"
# From the report's page back up to the output root, where the outputs' relative paths start.
REPORT_TO_OUTPUT_ROOT = "../" * (REPORT_DIR.count("/") + 1)
