"""The global map's autoencoder: every token is rebuilt from the whole grid (one latent per image), and its errors
are read in units of the image's own section's scale."""

import torch

from mala.model.global_map import GlobalAutoencoder


def test_the_global_autoencoder_rebuilds_every_token_from_the_whole_grid():
    torch.manual_seed(0)
    net = GlobalAutoencoder(6, (7, 5), width=8, latent=4, dropout=0.0).eval()
    tokens = torch.randn(1, 35, 6)
    moved = tokens.clone()
    moved[0, 0] += 50.0  # one corner token
    out, out_moved = net(tokens), net(moved)
    assert out.shape == tokens.shape
    assert (out_moved[0, -1] - out[0, -1]).abs().max() > 1e-5  # the far corner comes back changed


def test_errors_are_read_in_each_images_section_scale():
    torch.manual_seed(0)
    net = GlobalAutoencoder(6, (4, 4)).eval()
    net.scales = torch.tensor([1.0, 4.0])
    assert net.trained
    tokens = torch.randn(2, 16, 6)
    with torch.no_grad():
        errors = net.errors(net.standardise(tokens)).reshape(2, 1, 4, 4)
        torch.testing.assert_close(net.grid_distance(tokens, torch.tensor([0, 1])), errors / torch.tensor(
            [1.0, 4.0]).view(2, 1, 1, 1))
        torch.testing.assert_close(net.grid_distance(tokens, 1), errors / 4.0)
    assert not GlobalAutoencoder(6, (4, 4)).trained  # no scales: the model makes no global map
