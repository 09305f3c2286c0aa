import torch
import torch.nn.functional as F

from mala.model import MALA, image_score, reconstruction_map


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
    assert reconstruction_map(model, images).shape == (3, 64, 64)


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
