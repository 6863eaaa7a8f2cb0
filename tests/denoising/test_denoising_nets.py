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


def test_a_full_resolution_head_keeps_the_identity_start_and_reads_the_input_at_its_own_grid():
    torch.manual_seed(0)
    plain = build_generator(channels=[4, 8], strides=[2], num_res_units=0, features=4, in_channels=3)
    net = build_generator(channels=[4, 8], strides=[2], num_res_units=0, features=4, in_channels=3, head_channels=5)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), x[:, 1:2])  # zero-initialised head: still the identity
    assert net.fuse[0].in_channels == 4 + 3 and net.fuse[0].out_channels == 5 and net.head.in_channels == 5
    # without it the state dict keeps the keys the shipped generators were saved with
    assert not any(k.startswith("fuse") for k in plain.state_dict())
    # one pixel changed moves the noise estimate at that pixel through the full-resolution path
    torch.nn.init.normal_(net.head.weight)
    y = x.clone()
    y[:, 1, 7, 7] += 1.0
    with torch.no_grad():
        direct = net.head(net.fuse(torch.cat([net.act(net.body(x)), y], 1))) - net.noise(x)
    assert direct[0, 0, 7, 7].abs() > 0 and direct[0, 0, 0, 0] == 0


def test_a_3d_generator_with_a_full_resolution_head_starts_as_the_identity():
    torch.manual_seed(0)
    net = build_generator(spatial_dims=3, channels=[4, 8], strides=[2], num_res_units=0, features=4, head_channels=3)
    x = torch.rand(1, 1, 8, 16, 16)
    assert isinstance(net.fuse[0], torch.nn.Conv3d) and net.fuse[0].in_channels == 4 + 1
    assert torch.equal(net(x), x)
