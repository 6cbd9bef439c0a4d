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
