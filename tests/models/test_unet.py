"""The classic UNet: output size for any input size (2-D and 3-D), the paper's architecture
(parameter count derived from the layer formulas), pad/crop semantics, clear errors."""

import pytest
import torch
import torch.nn.functional as F

from medsegloss.models import UNet


def _double_conv_params(c_in: int, c_out: int, k: int) -> int:
    # two bias-free k-conv layers, each followed by a batch norm (weight + bias)
    return k * c_in * c_out + 2 * c_out + k * c_out * c_out + 2 * c_out


def _expected_params(in_channels: int, classes: int, base: int, depth: int, dims: int) -> int:
    k, up = 3**dims, 2**dims
    widths = [base * 2**i for i in range(depth + 1)]
    total = _double_conv_params(in_channels, widths[0], k)
    total += sum(_double_conv_params(widths[i - 1], widths[i], k) for i in range(1, depth + 1))
    for i in range(depth, 0, -1):
        total += up * widths[i] * widths[i - 1] + widths[i - 1]  # transposed conv with bias
        total += _double_conv_params(2 * widths[i - 1], widths[i - 1], k)  # after the skip concat
    return total + widths[0] * classes + classes  # 1x1 head


@pytest.mark.parametrize("dims,base,depth", [(2, 64, 4), (2, 8, 3), (3, 4, 2)])
def test_parameter_count_matches_the_architecture(dims, base, depth):
    net = UNet(1, 2, base=base, depth=depth, dims=dims)
    assert sum(p.numel() for p in net.parameters()) == _expected_params(1, 2, base, depth, dims)


def test_paper_configuration_is_the_31M_unet():
    # Ronneberger et al.: 64..1024 channels, ~31 M parameters
    net = UNet(1, 2, base=64, depth=4)
    assert net.down[-1][0].out_channels == 1024
    assert 30e6 < sum(p.numel() for p in net.parameters()) < 32e6


@pytest.mark.parametrize("size", [(32, 32), (17, 30), (5, 3), (1, 9)])
def test_2d_output_has_the_input_size(size):
    net = UNet(1, 3, base=4, depth=3).eval()
    assert net(torch.randn(2, 1, *size)).shape == (2, 3, *size)


@pytest.mark.parametrize("size", [(8, 8, 8), (5, 9, 7)])
def test_3d_output_has_the_input_size_and_backpropagates(size):
    net = UNet(2, 1, base=2, depth=2, dims=3)
    x = torch.randn(2, 2, *size, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 1, *size)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_odd_size_is_zero_padded_to_a_multiple_then_cropped():
    torch.manual_seed(0)
    net = UNet(1, 2, base=4, depth=2).eval()
    x = torch.randn(1, 1, 13, 10)
    padded = F.pad(x, [0, 2, 0, 3])  # up to 16 x 12, multiples of 2**depth
    torch.testing.assert_close(net(x), net(padded)[..., :13, :10], rtol=0, atol=0)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = UNet(1, 2, base=4, depth=2).eval()
    x = torch.randn(2, 1, 16, 16)
    reference = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), reference,
                               rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_shape():
    net = UNet(1, 2, base=4, depth=2)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 16, 16\)"):
        net(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*got shape \(1, 16, 16\)"):
        net(torch.randn(1, 16, 16))
    with pytest.raises(ValueError, match="dims must be 2"):
        UNet(1, 2, dims=4)
    with pytest.raises(ValueError, match="base must be a positive int"):
        UNet(1, 2, base=0)


# ---------------------------------------------------------------------------------------------
# Deep-supervision heads


def _heads_params(classes: int, base: int, depth: int) -> int:
    return sum(base * 2**level * classes + classes for level in range(1, depth))  # 1x1 convs with bias


def test_without_deep_supervision_the_network_is_unchanged():
    torch.manual_seed(0)
    plain = UNet(1, 3, base=4, depth=3)
    torch.manual_seed(0)
    supervised = UNet(1, 3, base=4, depth=3, deep_supervision=True)
    plain_state, supervised_state = plain.state_dict(), supervised.state_dict()
    heads = {key for key in supervised_state if key.startswith("deep_supervision_heads.")}
    assert not any("deep_supervision" in key for key in plain_state)
    assert list(plain_state) == [key for key in supervised_state if key not in heads]  # same keys, same order
    # the heads are built last, so every shared layer drew the same initial weights
    assert all(torch.equal(plain_state[key], supervised_state[key]) for key in plain_state)
    assert sum(p.numel() for p in supervised.parameters()) == _expected_params(1, 3, 4, 3, 2) + _heads_params(3, 4, 3)
    x = torch.randn(2, 1, 20, 12)
    outputs = supervised(x)
    torch.testing.assert_close(outputs[0], plain(x), rtol=0, atol=0)  # training mode: same full output
    torch.testing.assert_close(supervised.eval()(x), plain.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("dims,size", [(2, (17, 30)), (2, (32, 32)), (3, (9, 8, 5))])
def test_training_forward_returns_full_then_halved_resolutions(dims, size):
    net = UNet(1, 2, base=2, depth=3, dims=dims, deep_supervision=True)
    outputs = net(torch.randn(2, 1, *size))
    assert [tuple(o.shape) for o in outputs] == [
        (2, 2, *(-(-length // 2**scale) for length in size)) for scale in range(3)]
    assert isinstance(net.eval()(torch.randn(1, 1, *size)), torch.Tensor)


def test_lower_outputs_are_cropped_from_the_padded_grid():
    torch.manual_seed(0)
    net = UNet(1, 2, base=4, depth=2, deep_supervision=True)
    for module in net.modules():  # batch norm with running statistics, heads still returned
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    x = torch.randn(1, 1, 13, 10)
    cropped, padded = net(x), net(F.pad(x, [0, 2, 0, 3]))
    torch.testing.assert_close(cropped[1], padded[1][..., :7, :5], rtol=0, atol=0)


def test_every_head_receives_gradient_through_the_deep_supervision_loss():
    from medsegloss import losses

    net = UNet(1, 3, base=2, depth=3, deep_supervision=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    losses.deep_supervision(losses.get("dice_ce"))(net(torch.randn(2, 1, 16, 16)), labels).backward()
    assert len(net.deep_supervision_heads) == 2
    assert all(head.weight.grad is not None and head.weight.grad.abs().sum() > 0 for head in net.deep_supervision_heads)


@pytest.mark.parametrize("depth", [0, 1])
def test_shallow_networks_have_no_lower_outputs(depth):
    net = UNet(1, 2, base=2, depth=depth, deep_supervision=True)
    outputs = net(torch.randn(1, 1, 8, 8))
    assert isinstance(outputs, list) and len(outputs) == 1 and outputs[0].shape == (1, 2, 8, 8)
