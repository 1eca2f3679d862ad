import json

import pytest
import torch
from safetensors.torch import load_file

from foley.models.mapper import MapperSpec, V2AMapper, mapper_files, read_mapper, save_mapper
from foley.testing.random_models import save_tiny_mapper


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.fixture(scope="module")
def mapper(tmp_path_factory):
    return read_mapper(save_tiny_mapper(tmp_path_factory.mktemp("mapper"), clip_dim=32, clap_dim=24))


def test_checkpoint_round_trips_bit_exact(tmp_path, mapper):
    folder = save_mapper(mapper, tmp_path / "copy")
    again = read_mapper(folder)
    for name, tensor in mapper.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert json.loads((folder / "mapper.json").read_text())["variant"] == "diffusion-transformer"
    weights, _ = mapper_files(folder)
    assert set(load_file(str(weights))) == set(mapper.state_dict())


def test_missing_config_is_named(tmp_path, mapper):
    folder = save_mapper(mapper, tmp_path / "broken")
    (folder / "mapper.json").unlink()
    with pytest.raises(FileNotFoundError, match="mapper.json is missing"):
        read_mapper(folder)


def test_same_seed_same_sample_and_rows_are_independent_of_their_batch(mapper):
    condition = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    batch = mapper.map(condition, generators([1, 2, 3]), steps=6, guidance_scale=1.5)
    again = mapper.map(condition, generators([1, 2, 3]), steps=6, guidance_scale=1.5)
    alone = mapper.map(condition[1:2], generators([2]), steps=6, guidance_scale=1.5)
    assert torch.equal(batch, again)
    assert torch.allclose(batch[1], alone[0], atol=1e-5)
    other_seed = mapper.map(condition, generators([4, 5, 6]), steps=6, guidance_scale=1.5)
    assert not torch.allclose(batch, other_seed, atol=1e-3)
    assert torch.allclose(batch.norm(dim=-1), torch.ones(3))


def test_guidance_zero_ignores_the_condition_and_positive_guidance_follows_it(mapper):
    a, b = torch.nn.functional.normalize(torch.randn(2, 1, 32), dim=-1)
    unguided_a = mapper.map(a, generators([7]), steps=6, guidance_scale=0.0)
    unguided_b = mapper.map(b, generators([7]), steps=6, guidance_scale=0.0)
    assert torch.allclose(unguided_a, unguided_b, atol=1e-6)  # only the unconditional branch counts
    guided_a = mapper.map(a, generators([7]), steps=6, guidance_scale=1.0)
    guided_b = mapper.map(b, generators([7]), steps=6, guidance_scale=1.0)
    assert not torch.allclose(guided_a, guided_b, atol=1e-4)


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread; on a busy 2-core machine two threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixed_loss(mapper: V2AMapper, condition: torch.Tensor, target: torch.Tensor) -> float:
    """The loss with the same timesteps and noise every time (and no condition dropout): comparable across steps."""
    with torch.no_grad():
        draws = [mapper(condition, target, 0.0, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    return torch.stack(draws).mean().item()


@pytest.mark.parametrize(
    "variant", ["diffusion-transformer", "diffusion-mlp", "regression-mlp", "regression-transformer"]
)
def test_every_variant_maps_and_trains(variant, one_thread):
    torch.manual_seed(0)
    mapper = V2AMapper(MapperSpec(variant=variant, clip_dim=16, clap_dim=8, depth=1, heads=2, head_dim=8))
    # A fixed small batch of pairs with a learnable relation: the target direction is a linear map of the condition.
    condition = torch.randn(32, 16)
    target = condition @ torch.randn(16, 8)
    initial = fixed_loss(mapper.eval(), condition, target)
    assert initial > 0

    optimizer = torch.optim.AdamW(mapper.train().parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = mapper(condition, target, condition_dropout=0.1, generator=generator)
        assert loss.item() > 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = fixed_loss(mapper.eval(), condition, target)
    assert final < 0.5 * initial, f"{variant}: loss {initial:.3f} -> {final:.3f}"

    mapped = mapper.map(condition[:4], generators(range(4)), steps=3, guidance_scale=1.0, sampler="ddpm")
    assert mapped.shape == (4, 8) and torch.allclose(mapped.norm(dim=-1), torch.ones(4))
