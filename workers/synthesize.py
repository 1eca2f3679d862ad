"""Stage 3: CLAP embedding -> waveform, with AudioLDM.

INPUT  rows with clap_embeddings (n_windows x D_clap).
OUTPUT the same rows plus waveforms (windows x samples, float32 at sample_rate) and the actor that made them.
       Fan-out 1:1.

The mapped embedding conditions AudioLDM through `prompt_embeds`; the unconditional branch of classifier-free
guidance is the CLAP text embedding of "" as in the original. Windows of all videos in the batch are generated
together, one generator per window, so each window's audio depends only on its seed.
"""

from __future__ import annotations

import numpy as np
import torch

from foley.config import FoleyConfig
from foley.media.windows import window_seed
from foley.models.audioldm import clap_text_embeddings, load_audioldm
from foley.models.device import pick_device
from foley.pipeline.rows import batch_of, rows_of
from foley.pipeline.stage import WindowRef, map_windows, set_torch_threads, this_worker
from foley.storage.store import Storage


class Synthesize:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.resources = config.stages.synthesize
        set_torch_threads(self.resources)
        self.device = pick_device(config.device, self.resources)
        self.pipeline = load_audioldm(config.audioldm, Storage(config.storage), self.device)
        self.sample_rate = int(self.pipeline.vocoder.config.sampling_rate)
        self.worker = this_worker()
        self.empty_text_embedding = clap_text_embeddings(
            self.pipeline.text_encoder, self.pipeline.tokenizer, [""], self.device
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        map_windows(
            rows,
            "clap_embeddings",
            "waveforms",
            self.resources.max_forward_batch,
            "synthesize",
            self.synthesize_windows,
        )
        for row in rows:
            row["sample_rate"] = self.sample_rate
            row["synthesize_worker"] = self.worker
        return batch_of(rows)

    def synthesize_windows(self, embeddings: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        clap_embeddings = np.stack(embeddings)
        expected = self.pipeline.unet.config.projection_class_embeddings_input_dim
        if clap_embeddings.shape[1] != expected:
            raise ValueError(
                f"AudioLDM expects {expected}-d CLAP embeddings but the mapper gives "
                f"{clap_embeddings.shape[1]}-d; use a mapper trained for this AudioLDM"
            )
        dtype = self.pipeline.unet.dtype
        conditions = torch.from_numpy(clap_embeddings).to(self.device, dtype)
        generators = [
            torch.Generator(self.device).manual_seed(
                window_seed(self.config.seed, str(ref.row["relative_path"]), ref.video_window, "audioldm")
            )
            for ref in windows
        ]
        audio = self.pipeline(
            prompt_embeds=conditions,
            negative_prompt_embeds=self.empty_text_embedding.to(dtype).expand(len(conditions), -1),
            num_inference_steps=self.config.audioldm.steps,
            guidance_scale=self.config.audioldm.guidance_scale,
            audio_length_in_s=self.config.window.seconds,
            generator=generators,
            output_type="np",
        ).audios
        return np.asarray(audio, dtype=np.float32)
