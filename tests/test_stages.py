"""Each stage on its own, called the way Ray Data calls it (a numpy batch of video rows)."""

import numpy as np
import pytest
import torch

from conftest import one_window, row_for, run
from foley.media.render import render_test_video
from foley.media.windows import window_bounds_s
from foley.pipeline.columns import FAILED, PENDING
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import new_row
from foley.storage.inputs import InputItem
from media_checks import frames_on_screen, plays, stream_duration, streams, video_packets_md5


def test_decode_embed_averages_the_sampled_frames_of_each_window(tmp_path, tiny_config, decode_embed):
    from torchcodec.decoders import VideoDecoder

    video = render_test_video(tmp_path / "clip.mp4", 12.0, 320, 180, 25)
    [row] = run(decode_embed, [row_for(video, tiny_config)])
    assert row["status"] == PENDING and row["n_windows"] == 2
    assert row["duration_s"] == pytest.approx(12.0) and (row["width"], row["height"]) == (320, 180)
    embeddings = row["clip_embeddings"]
    assert embeddings.shape == (2, decode_embed.clip.embed_dim)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    reader = VideoDecoder(str(video), dimension_order="NHWC")  # full size: the stage decodes small, so by cosine
    for window, (start, end) in enumerate(
        window_bounds_s(12.0, tiny_config.window.seconds, tiny_config.window.overlap_seconds)
    ):
        fps, count = reader.metadata.average_fps, reader.metadata.num_frames
        indices = frames_on_screen(start, end, fps, count, tiny_config.window.frames)
        frames = decode_embed.clip.embed_frames(reader.get_frames_at(indices).data.numpy())
        expected = torch.nn.functional.normalize(frames.mean(dim=0), dim=0).numpy()
        assert float(expected @ embeddings[window]) > 0.99


def test_decode_embed_turns_a_bad_file_into_a_failed_row(tmp_path, tiny_config, decode_embed):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    good = render_test_video(tmp_path / "good.mp4", 2.0, 160, 120, 25)
    bad_row, good_row = run(decode_embed, [row_for(fake, tiny_config), row_for(good, tiny_config)])
    assert bad_row["status"] == FAILED
    assert str(fake) in bad_row["error"] and "not a readable video" in bad_row["error"]
    assert good_row["status"] == PENDING and good_row["n_windows"] == 1


def two_window_row(config, embedding: np.ndarray, relative="a.mp4") -> dict:
    row = new_row(InputItem(relative, relative), "unused.mp4", config, DUB)
    row["clap_embeddings"] = np.stack([embedding, embedding])
    return row


def test_synthesize_seeding(tiny_config, synthesize):
    """Same seed, same audio; another window or another video draws other noise."""
    dim = synthesize.audioldm.condition_dim
    embedding = (np.ones(dim) / np.sqrt(dim)).astype(np.float32)
    first, same, other_video = run(
        synthesize,
        [
            two_window_row(tiny_config, embedding),
            two_window_row(tiny_config, embedding),
            two_window_row(tiny_config, embedding, "b.mp4"),
        ],
    )
    waves = first["waveforms"]
    assert waves.shape == (2, round(tiny_config.window.seconds * 16000))
    assert np.array_equal(waves, same["waveforms"])
    assert not np.allclose(waves[0], waves[1])  # identical condition, different window: different noise
    assert not np.allclose(waves[0], other_video["waveforms"][0])
    assert first["sample_rate"] == 16000 and first["seconds_synthesize"] > 0


def test_synthesize_guidance_uses_the_empty_text_embedding_by_default(tiny_config, synthesize):
    audioldm = synthesize.audioldm
    # AudioLDM's own text path: CLAP's projected text embedding of the prompt padded to the tokenizer's length, unit
    tokens = audioldm.tokenizer(
        [""], padding="max_length", max_length=audioldm.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        reference = audioldm.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).text_embeds
    reference = torch.nn.functional.normalize(reference, dim=-1)
    np.testing.assert_allclose(synthesize.conditioner.text(""), reference[0].numpy(), atol=1e-6)
    dim = audioldm.condition_dim
    embedding = torch.nn.functional.normalize(torch.randn(dim), dim=0).numpy()
    guided = synthesize.synthesize_windows([embedding], [_ref(tiny_config)])
    synthesize.config = tiny_config.model_copy(
        update={"audioldm": tiny_config.audioldm.model_copy(update={"guidance_scale": 1.0})}
    )
    try:
        unguided = synthesize.synthesize_windows([embedding], [_ref(tiny_config)])
    finally:
        synthesize.config = tiny_config
    assert not np.allclose(guided, unguided)


def _ref(config):
    from foley.pipeline.stage import WindowRef

    return WindowRef(new_row(InputItem("a.mp4", "a.mp4"), "o.mp4", config, DUB), 0)


def test_mux_copies_the_video_stream_and_fits_the_audio(tmp_path, tiny_config):
    from workers.mux import Mux

    video = render_test_video(tmp_path / "in" / "clip.webm", 7.3, 160, 96, 24)
    output = tmp_path / "out" / "clip.webm"
    row = row_for(video, tiny_config, output=output)
    row.update(
        duration_s=7.3,
        n_windows=1,
        windows=one_window(7.3),
        sample_rate=16000,
        local_path=str(video),
        waveforms=np.random.default_rng(0).uniform(-0.5, 0.5, (1, 163840)).astype(np.float32),
    )
    [result] = run(Mux(tiny_config, str(tmp_path / "out")), [row])
    assert result["status"] == "ok", result["error"]
    assert streams(output) == ["video", "audio"] and plays(output)
    assert video_packets_md5(output) == video_packets_md5(video)
    assert abs(stream_duration(output, "a:0") - stream_duration(output, "v:0")) < 0.1
    assert not list(output.parent.glob(".*partial*"))  # nothing half-written left behind


def test_the_slow_decode_paths_see_the_same_frames(tmp_path, tiny_config, decode_embed):
    """decode.frames=all and decode.size=native exist to be measured; they must not change what CLIP sees much."""
    from workers.decode_embed import DecodeEmbed

    video = render_test_video(tmp_path / "clip.mp4", 6.0, 320, 180, 25)
    [fast] = run(decode_embed, [row_for(video, tiny_config)])
    slow_config = tiny_config.with_overrides("decode.frames=all", "decode.size=native")
    [slow] = run(DecodeEmbed(slow_config), [row_for(video, slow_config)])
    cosine = (fast["clip_embeddings"] * slow["clip_embeddings"]).sum(axis=1)
    assert cosine.min() > 0.98


def test_mux_can_reencode_the_video_when_asked(tmp_path, tiny_config):
    from workers.mux import Mux

    video = render_test_video(tmp_path / "in.mp4", 2.0, 160, 96, 24)
    config = tiny_config.with_overrides("output.video_codec=libx264")
    row = row_for(video, config, output=tmp_path / "out" / "in.mp4")
    row.update(
        duration_s=2.0,
        n_windows=1,
        windows=one_window(2.0),
        sample_rate=16000,
        local_path=str(video),
        waveforms=np.zeros((1, 163840), np.float32),
    )
    [result] = run(Mux(config, str(tmp_path / "out")), [row])
    assert result["status"] == "ok" and plays(tmp_path / "out" / "in.mp4")
    assert video_packets_md5(tmp_path / "out" / "in.mp4") != video_packets_md5(video)
