import torch

from napari_medai.models.denoising_nets import build_discriminator, build_generator


def test_generator_is_identity_at_initialisation():
    torch.manual_seed(0)
    net = build_generator(channels=[4, 8], strides=[2], num_res_units=0, features=4)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(net(x), x)  # zero-initialised head: f(x) == 0 exactly
    assert net.size_multiple == 2


def test_generator_learns_something_after_one_step():
    torch.manual_seed(0)
    net = build_generator(channels=[4, 8], strides=[2], num_res_units=0, features=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.rand(2, 1, 32, 32)
    loss = (net(x) - 0.5).abs().mean()
    loss.backward()
    opt.step()
    assert not torch.equal(net(x), x)


def test_discriminator_returns_patch_logits_last():
    disc = build_discriminator(channels=8)
    out = disc(torch.rand(2, 1, 64, 64))
    assert isinstance(out, list)
    assert out[-1].shape[:2] == (2, 1) and out[-1].ndim == 4


def test_2_5d_generator_returns_the_centre_slice_at_initialisation():
    torch.manual_seed(0)
    net = build_generator(channels=[4, 8], strides=[2], num_res_units=0, features=4, in_channels=3)
    x = torch.rand(2, 3, 16, 16)
    out = net(x)
    assert out.shape == (2, 1, 16, 16)
    assert torch.equal(out, x[:, 1:2])
