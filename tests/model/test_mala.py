import torch
import torch.nn.functional as F

from mala.model import MALA, image_score, reconstruction_map
from mala.model.mala import visible_patch_count
from mala.model.maps import hidden_reconstruction, patch_partition
from tests.model.test_hybrid import hybrid_config


def test_forward_shapes_and_ranges(small_config):
    model = MALA(small_config.model).eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        recon = model.reconstruct(images, 0.75)
        logits = model.map_logits(images)
        maps = model(images)
    assert recon.image.shape == images.shape and recon.mask.shape == (3, 64)
    assert logits.shape == (3, 2, 64, 64)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps, torch.softmax(logits, 1)[:, 0])
    assert reconstruction_map(model, images, 0.75).shape == (3, 64, 64)


def test_without_tbm_map_comes_from_decoder_tokens_only(small_config):
    small_config.model.use_tbm = False
    model = MALA(small_config.model)
    assert not hasattr(model.tbm, "lp1")
    assert model.tbm.lp2.in_features == small_config.model.decoder_embed_dim
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 64, 64)


def test_image_score_is_max_of_mean_filtered_map():
    maps = torch.zeros(2, 32, 32)
    maps[0, 10:13, 10:13] = 1.0  # a 3x3 blob: its 3x3 mean peaks at 1
    maps[1, 5, 5] = 1.0  # a single pixel: 3x3 mean peaks at 1/9
    scores = image_score(maps, 3)
    assert torch.allclose(scores, torch.tensor([1.0, 1 / 9]))
    manual = F.avg_pool2d(maps.unsqueeze(1), 5, stride=1, padding=2, count_include_pad=False).amax(dim=(1, 2, 3))
    assert torch.allclose(image_score(maps, 5), manual)


def test_stage_freezing(small_config):
    model = MALA(small_config.model)
    model.set_stage(1)
    assert model.blocks[0].attn.qkv.weight.requires_grad and model.mask_token.requires_grad
    assert not any(p.requires_grad for p in model.tbm.parameters())
    model.set_stage(2)
    assert not any(p.requires_grad for p in model.encoder_parameters())
    assert all(p.requires_grad for p in model.tbm.parameters())
    assert model.decoder_blocks[0].mlp.fc1.weight.requires_grad
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad


def test_patch_partition_covers_every_patch_once_in_sets_of_the_visible_size():
    parts = patch_partition(196, 0.75)
    assert len(parts) == 4 and all(len(part) == visible_patch_count(196, 0.75) for part in parts)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(196))
    assert all(torch.equal(a, b) for a, b in zip(parts, patch_partition(196, 0.75)))  # fixed at every call
    assert len(patch_partition(64, 0.2)) == 2  # a low ratio still hides every patch in one pass


def _hidden_counts(model: MALA, images: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The masks (passes, B, N) of the passes `hidden_reconstruction` makes (1: hidden)."""
    masks = []
    reconstruct = model.reconstruct

    def recording(*args, **kwargs):
        result = reconstruct(*args, **kwargs)
        masks.append(result.mask)
        return result

    model.reconstruct = recording
    hidden_reconstruction(model, images, mask_ratio)
    return torch.stack(masks)


def test_each_pass_hides_the_training_share_and_each_patch_is_visible_once(small_config):
    model = MALA(small_config.model).eval()
    with torch.no_grad():
        masks = _hidden_counts(model, torch.rand(2, 3, 64, 64), 0.75)
    assert masks.shape == (4, 2, 64)
    assert torch.all(masks.mean(dim=2) == 0.75)  # 48 of 64 patches hidden in every pass, as stage 1 trains
    assert torch.all(masks.sum(dim=0) == 3)  # each patch hidden in 3 passes, seen in 1


def test_an_altered_patch_is_predicted_from_its_surroundings_not_copied(small_config):
    torch.manual_seed(0)
    model = MALA(small_config.model).eval()
    images = torch.rand(1, 3, 64, 64)
    altered = images.clone()
    altered[:, :, 24:32, 16:24] = 1 - altered[:, :, 24:32, 16:24]  # patch (3, 2) of the 8 x 8 grid
    with torch.no_grad():
        clean, defect = hidden_reconstruction(model, images, 0.75), hidden_reconstruction(model, altered, 0.75)
        seen_clean = model.reconstruct(images, 0.0).image
        seen_defect = model.reconstruct(altered, 0.0).image
    patch = (slice(None), slice(None), slice(24, 32), slice(16, 24))
    # the patch's own pixels never reach its reconstruction: the same prediction for both images
    torch.testing.assert_close(defect[patch], clean[patch], atol=1e-5, rtol=0)
    # with mask ratio 0 the patch is an input to its own reconstruction
    assert (seen_defect[patch] - seen_clean[patch]).abs().max() > 1e-3
    # the map is reproducible: the partition is fixed
    assert torch.equal(reconstruction_map(model, altered, 0.75), reconstruction_map(model, altered, 0.75))


def test_the_hybrid_reconstruction_map_hides_every_patch_too():
    model = MALA(hybrid_config()).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        masks = _hidden_counts(model, images, 0.75)
        maps = reconstruction_map(model, images, 0.75)
    assert torch.all(masks.sum(dim=0) == 3) and maps.shape == (2, 64, 64)
    assert torch.equal(maps, reconstruction_map(model, images, 0.75))
