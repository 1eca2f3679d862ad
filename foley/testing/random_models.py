"""Random-weight models in the real models' native formats: no download, loaded by the production loaders.

Tiny ones for the offline demo and the tests keep the real signal geometry (16 kHz audio, 64 mel bins, hop 160,
VAE factor 4, so a 10.24-s window is an 8 x 256 x 16 latent) and shrink only the widths. Full-size ones
(../shared/reference/model-configs.md: AudioLDM s-full-v2, the paper's mapper) measure real costs in the
benchmark, since speed does not depend on weight values. Random weights make noise, not Foley.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import diffusers
import open_clip
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    RobertaConfig,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

from foley.config import ClapConfig, ClassifierConfig
from foley.models.clap import (
    AUDIOLDM_CLAP_PREFIX,
    build_clap_module,
    convert_audioldm_clap,
    read_audioldm_clap,
    text_branch_config,
)
from foley.models.mapper import MapperSpec, V2AMapper, save_mapper
from foley.models.panns import Cnn14
from foley.models.tokenizers import byte_level_clip_tokenizer, byte_level_tokenizer

TINY_EMBED_DIM = 64  # CLIP's
TINY_CLAP_DIM = 512  # laion_clap's joint embedding with HTSAT-tiny, as in AudioLDM's CLAP
TINY_CNN14_WIDTHS = (4, 4, 8, 8, 16, 32)
FULL_CNN14_WIDTHS = (64, 128, 256, 512, 1024, 2048)  # PANNs' CNN14: 2048-d embeddings for FD_PANNs
# laion_clap fixes the text width at 768; one layer and a byte-level vocabulary keep the tiny one small.
TINY_CLAP_TEXT = RobertaConfig(
    vocab_size=len(byte_level_tokenizer()),
    hidden_size=768,
    num_hidden_layers=1,
    num_attention_heads=12,
    intermediate_size=64,
    max_position_embeddings=80,
    type_vocab_size=1,
    pad_token_id=1,
    layer_norm_eps=1e-5,
)
# RoBERTa-base, the text branch of AudioLDM's CLAP.
FULL_CLAP_TEXT = RobertaConfig(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    layer_norm_eps=1e-5,
)


def save_tiny_clip(folder: Path, embed_dim: int = TINY_EMBED_DIM, seed: int = 0) -> Path:
    """An open_clip 'local-dir:' folder: open_clip_config.json + open_clip_model.safetensors."""

    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: random init from the config
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def save_tiny_audioldm_checkpoint(path: Path, seed: int = 0, text_config: RobertaConfig = TINY_CLAP_TEXT) -> Path:
    """An original AudioLDM checkpoint as its authors save it (Lightning's {'state_dict': ...}): a random laion_clap
    CLAP (HTSAT-tiny audio branch, `text_config` text branch) under cond_stage_model.model.*, and a few random
    tensors standing in for the UNet and VAE, which a conversion of the CLAP must leave out."""
    torch.manual_seed(seed)
    module = build_clap_module(ClapConfig(), text_config, torch.device("cpu"))
    state = {f"{AUDIOLDM_CLAP_PREFIX}{name}": tensor for name, tensor in module.model.state_dict().items()}
    # the released checkpoints carry this buffer (saved by an older transformers); a conversion drops it
    position_ids = torch.arange(text_config.max_position_embeddings)[None]
    state[f"{AUDIOLDM_CLAP_PREFIX}text_branch.embeddings.position_ids"] = position_ids
    state |= {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(16, 8, 3, 3),
        "model.diffusion_model.out.2.weight": torch.randn(8, 16, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.randn(8, 1, 3, 3),
        "first_stage_model.quant_conv.weight": torch.randn(16, 16, 1, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 0, "global_step": 0}, path)
    return path


# diffusers' scripts/convert_original_audioldm_to_diffusers.py: laion_clap names -> ClapTextModelWithProjection's
TEXT_ENCODER_NAMES = {
    "text_branch.": "text_model.",
    "text_projection.0.": "text_projection.linear1.",
    "text_projection.2.": "text_projection.linear2.",
}


def clap_text_encoder(clap: dict[str, torch.Tensor]) -> ClapTextModelWithProjection:
    """The text branch of AudioLDM's CLAP (laion_clap layout) as diffusers' AudioLDM holds it: its `text_encoder`,
    mapped as diffusers' conversion script maps it (text_transform and the audio branch are left out)."""
    roberta = text_branch_config(clap)
    config = ClapTextConfig(
        vocab_size=roberta.vocab_size,
        hidden_size=roberta.hidden_size,
        num_hidden_layers=roberta.num_hidden_layers,
        num_attention_heads=roberta.num_attention_heads,
        intermediate_size=roberta.intermediate_size,
        max_position_embeddings=roberta.max_position_embeddings,
        type_vocab_size=roberta.type_vocab_size,
        pad_token_id=roberta.pad_token_id,
        bos_token_id=roberta.bos_token_id,
        eos_token_id=roberta.eos_token_id,
        layer_norm_eps=roberta.layer_norm_eps,
        projection_dim=clap["text_projection.2.weight"].shape[0],
    )
    weights = {}
    for key, value in clap.items():
        old = next((old for old in TEXT_ENCODER_NAMES if key.startswith(old)), None)
        if old:
            weights[TEXT_ENCODER_NAMES[old] + key.removeprefix(old)] = value
    model = ClapTextModelWithProjection(config)
    # strict: every weight comes from the CLAP; only the index buffers (position and token-type ids) stay the model's
    model.load_state_dict(dict(model.named_buffers()) | weights, strict=True)
    return model.eval()


def save_tiny_audioldm(folder: Path, original: Path, seed: int = 0) -> Path:
    """An AudioLDM folder as the hub holds it (save_audioldm_folder) with tiny widths and the real audio geometry;
    its text encoder is the CLAP text branch of `original` (save_tiny_audioldm_checkpoint), as in the real one."""
    text_encoder = clap_text_encoder(read_audioldm_clap(original))
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=8,
        out_channels=8,
        # Attention only at the coarsest of three levels (64 x 4 latent positions): at two levels it attended over
        # 128 x 8 and took 90% of a tiny window's synthesis, 7x what it takes now.
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16, 32),
        attention_head_dim=8,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=text_encoder.config.projection_dim,
        class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=64,
            sampling_rate=16000,
            upsample_initial_channel=64,
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[10, 8, 4, 4, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1]],
            normalize_before=False,
            initializer_range=0.5,  # audible noise rather than near-silence
        )
    )
    parts = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "vocoder": vocoder}
    return save_audioldm_folder(folder, parts | {"scheduler": audioldm_scheduler()})


def audioldm_scheduler() -> DDIMScheduler:
    """AudioLDM's noise schedule, as cvssp/audioldm-s-full-v2 holds it."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )


def save_audioldm_folder(folder: Path, parts: dict) -> Path:
    """AudioLDM's parts as the hub holds them (cvssp/audioldm-s-full-v2): each with its own `save_pretrained` in its
    subfolder, and the model_index.json that names their classes."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "AudioLDMPipeline", "_diffusers_version": diffusers.__version__}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
        library = "diffusers" if type(part).__module__.startswith("diffusers") else "transformers"
        index[name] = [library, type(part).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def save_tiny_mapper(
    folder: Path,
    clip_dim: int = TINY_EMBED_DIM,
    clap_dim: int = TINY_CLAP_DIM,
    variant: str = "diffusion-transformer",
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    spec = MapperSpec(
        variant=variant, clip_dim=clip_dim, clap_dim=clap_dim, depth=2, heads=2, head_dim=16, mlp_expansion=2
    )
    return save_mapper(V2AMapper(spec), folder)


def save_tiny_models(root: Path) -> dict[str, Path]:
    """Everything configs/tiny.yaml points at, under `root`; AudioLDM's text encoder and the CLAP folder come from
    one original checkpoint, so the two CLAP branches share one space, as in the real models."""
    original = save_tiny_audioldm_checkpoint(root / "audioldm-original.ckpt")
    convert_audioldm_clap(original, root / "clap")
    return {
        "clip": save_tiny_clip(root / "clip"),
        "audioldm": save_tiny_audioldm(root / "audioldm", original),
        "mapper": save_tiny_mapper(root / "mapper"),
        "clap": root / "clap",
        "detector": save_tiny_detector(root / "detector"),
        "panns": save_cnn14(root / "panns" / "cnn14.pth", TINY_CNN14_WIDTHS),
    }


def save_cnn14(path: Path, widths: tuple[int, ...] = FULL_CNN14_WIDTHS, seed: int = 0) -> Path:
    """A random CNN14 in PANNs' released checkpoint format (torch.save of {"model": state_dict}), 16 kHz front end
    (512-sample window, 64 mel bins) and AudioSet's 527 classes; the released widths unless told."""
    torch.manual_seed(seed)
    model = Cnn14(list(widths), mel_bins=64, classes=527, window_size=512, config=ClassifierConfig())
    # Scaled as trained weights roughly are, so the outputs depend on the sound: the log-mel input normalised (it
    # spans about -100 to 20 dB), and He-initialised convolutions that keep the signal's size through 12 ReLUs.
    model.bn0.running_mean.fill_(-50.0)
    model.bn0.running_var.fill_(30.0**2)
    for name, parameter in model.named_parameters():
        if name.endswith(("conv1.weight", "conv2.weight")) or name in ("fc1.weight", "fc_audioset.weight"):
            torch.nn.init.kaiming_normal_(parameter, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return path


def save_full_detector(folder: Path, seed: int = 0) -> Path:
    """OWLv2 base/16 as google/owlv2-base-patch16-ensemble builds it (960-px images, 3600 patches; ViT-B/16 image
    tower, 12-layer text tower), with random weights and a byte-level tokenizer (token ids do not change speed)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor  # noqa: PLC0415

    tokenizer = byte_level_clip_tokenizer()
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(
        Owlv2Config(
            text_config=dict(
                max_position_embeddings=16,
                bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
                eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            ),
            vision_config=dict(image_size=960, patch_size=16),
        )
    )
    model.save_pretrained(folder)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 960, "width": 960}), tokenizer).save_pretrained(folder)
    return folder


def save_tiny_detector(folder: Path, seed: int = 0) -> Path:
    """An OWLv2 of one layer per tower on 64-px images (16 patches), with its processor, as save_pretrained writes
    a hub model (model.safetensors, config.json and the processor's files)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor  # noqa: PLC0415

    tokenizer = byte_level_clip_tokenizer()
    towers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = towers | dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=16,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(
        Owlv2Config(text_config=text, vision_config=towers | dict(image_size=64, patch_size=16), projection_dim=32)
    )
    with torch.no_grad():  # random box offsets saturate the sigmoid into boxes of no area; a trained head's are small
        model.box_head.dense2.weight.mul_(0.01)
    model.save_pretrained(folder)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer).save_pretrained(folder)
    return folder


# AudioLDM s-full-v2 as diffusers builds it (cvssp/audioldm-s-full-v2): UNet 185M parameters, 10.24-s windows.
FULL_UNET = dict(
    sample_size=128,
    in_channels=8,
    out_channels=8,
    layers_per_block=2,
    attention_head_dim=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(128, 256, 384, 640),
    cross_attention_dim=(128, 256, 384, 640),
    class_embed_type="simple_projection",
    projection_class_embeddings_input_dim=512,
    class_embeddings_concat=True,
)
FULL_VAE = dict(
    in_channels=1,
    out_channels=1,
    latent_channels=8,
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    sample_size=512,
)
FULL_VOCODER = dict(
    model_in_dim=64,
    sampling_rate=16000,
    upsample_initial_channel=1024,
    upsample_rates=[5, 4, 2, 2, 2],
    upsample_kernel_sizes=[16, 16, 8, 4, 4],
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5]] * 3,
    normalize_before=False,
)


def save_full_audioldm(folder: Path, seed: int = 0) -> Path:
    """AudioLDM s-full-v2's architecture with random weights (about 1.6 GB on disk); the text encoder is
    RoBERTa-base + projection, with a byte-level tokenizer (real token ids are irrelevant to speed)."""
    torch.manual_seed(seed)
    parts = {
        "vae": AutoencoderKL(**FULL_VAE),
        "text_encoder": ClapTextModelWithProjection(ClapTextConfig()),
        "tokenizer": byte_level_tokenizer(max_length=512),
        "unet": UNet2DConditionModel(**FULL_UNET),
        "scheduler": audioldm_scheduler(),
        "vocoder": SpeechT5HifiGan(SpeechT5HifiGanConfig(**FULL_VOCODER)),
    }
    return save_audioldm_folder(folder, parts)


def save_full_mapper(folder: Path, seed: int = 0) -> Path:
    """The paper's diffusion prior: depth 12, 12 heads of 64, 512 -> 512."""
    torch.manual_seed(seed)
    return save_mapper(V2AMapper(MapperSpec()), folder)


def save_full_clap(folder: Path, seed: int = 0) -> Path:
    """AudioLDM s-full-v2's CLAP (HTSAT-tiny audio, RoBERTa-base text) with random weights, converted as
    jobs.convert_audioldm_clap converts the real one (about 0.6 GB on disk)."""
    with tempfile.TemporaryDirectory() as scratch:
        original = save_tiny_audioldm_checkpoint(Path(scratch) / "audioldm-original.ckpt", seed, FULL_CLAP_TEXT)
        convert_audioldm_clap(original, folder)
    return folder
