"""The model zoo: a network named by a spec string, built with seeded weights.

A spec is ``NAME`` or ``NAME(key=value, ...)``, the options in Python literal syntax:

- ``unet``: the built-in :class:`~medsegloss.models.UNet` (``base_width``, ``depth``, ``dims``,
  ``deep_supervision`` of the config apply);
- ``smp:<Arch>(...)``: a ``segmentation_models_pytorch`` architecture (2-D only), e.g.
  ``smp:Unet(encoder_name="resnet18")``; ``encoder_weights=None`` unless given (no downloads);
- ``monai:<Net>(...)``: a ``monai.networks.nets`` class, e.g. ``monai:BasicUNet`` or
  ``monai:DynUNet`` (kernel sizes and strides from ``depth`` when not given);
- ``module:pkg.mod:factory(...)`` or ``module:pkg.mod.factory(...)``: any factory
  ``(in_channels, out_channels, dims, **options) -> nn.Module``.

``in_channels`` / ``out_channels`` (``classes`` for smp) and ``spatial_dims`` are filled in.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from medsegloss._literals import keyword_literals

PREFIXES = ("smp", "monai", "module")
EXTRAS = {"smp": ("segmentation_models_pytorch", "smp"), "monai": ("monai", "monai")}


def parse_model_spec(spec: str) -> tuple[str, str, dict]:
    """``"smp:Unet(encoder_name='resnet18')"`` -> ``("smp", "Unet", {"encoder_name": "resnet18"})``.

    The prefix is ``""`` for the built-in ``unet``. Options must be Python literals.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model must be a spec string such as 'unet' or 'smp:Unet(...)', got {spec!r}")
    text = spec.strip()
    name, options = text, {}
    if "(" in text:
        if not text.endswith(")"):
            raise ValueError(f"model {spec!r}: options must close with ')', as in NAME(key=value, ...)")
        name, argument_text = text[:text.index("(")], text[text.index("(") + 1:-1]
        try:
            options = keyword_literals(argument_text)
        except ValueError as error:
            raise ValueError(f"model {spec!r}: {error}, as in NAME(key=value, ...)") from None
    name = name.strip()
    prefix, _, rest = name.partition(":")
    if not rest:
        if name != "unet":
            raise ValueError(f"model {spec!r}: unknown model {name!r}; use unet, smp:<Arch>, monai:<Net> "
                             f"or module:pkg.mod:factory")
        return "", "unet", options
    if prefix not in PREFIXES:
        raise ValueError(f"model {spec!r}: unknown prefix {prefix!r}; one of {', '.join(PREFIXES)}")
    return prefix, rest.strip(), options


def _import_extra(prefix: str):
    module_name, extra = EXTRAS[prefix]
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise ImportError(f"model {prefix}:... needs {module_name}: pip install 'medsegloss[{extra}]'") from None
    except RuntimeError as error:  # installed but broken, e.g. a torchvision built for another torch
        raise ImportError(f"model {prefix}:... needs {module_name}, which is installed but fails to import "
                          f"({error}); reinstall it (and torchvision) to match torch {torch.__version__}") from None


def _module_factory(target: str, spec: str):
    module_name, _, attribute = target.rpartition(":") if ":" in target else target.rpartition(".")
    if not module_name:
        raise ValueError(f"model {spec!r}: write module:pkg.mod:factory or module:pkg.mod.factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model {spec!r}: cannot import {module_name!r} ({error})") from None
    if not callable(getattr(module, attribute, None)):
        raise ValueError(f"model {spec!r}: {module_name!r} has no callable {attribute!r}")
    return getattr(module, attribute)


def _dynunet_defaults(options: dict, depth: int) -> dict:
    levels = max(depth, 1) + 1  # the input level and `depth` down-sampling steps
    options.setdefault("kernel_size", [3] * levels)
    options.setdefault("strides", [1] + [2] * (levels - 1))
    options.setdefault("upsample_kernel_size", list(options["strides"])[1:])
    return options


class StackedToList(nn.Module):
    """Wraps MONAI's DynUNet: its training output ``(N, 1 + heads, C, *spatial)`` (every head
    up-sampled to full size) becomes the ``[full, head, ...]`` list that
    :func:`medsegloss.losses.deep_supervision` takes; eval mode returns ``(N, C, *spatial)``."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor):
        output = self.network(x)
        if self.training and output.dim() == x.dim() + 1:
            return list(output.unbind(dim=1))
        return output


def build_model(spec: str, in_channels: int, out_channels: int, *, dims: int = 2, base_width: int = 16,
                depth: int = 4, deep_supervision: bool = False) -> nn.Module:
    """The network of ``spec`` taking ``(N, in_channels, *spatial)``, giving ``(N, out_channels, *spatial)``
    logits (a list of them in training mode with ``deep_supervision``). Seed before calling for
    reproducible weights (:func:`medsegloss.experiment.components.make_model` does)."""
    prefix, name, options = parse_model_spec(spec)
    if prefix == "":
        from medsegloss.models.unet import UNet

        options = {"base": base_width, "depth": depth, "dims": dims, "deep_supervision": deep_supervision, **options}
        return UNet(in_channels, out_channels, **options)
    if prefix == "module":
        model = _module_factory(name, spec)(in_channels, out_channels, dims, **options)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {spec!r}: the factory returned {type(model).__name__}, not an nn.Module")
        return model
    library = _import_extra(prefix)
    if prefix == "smp":
        if dims != 2:
            raise ValueError(f"model {spec!r}: segmentation_models_pytorch networks are 2-D only, got dims={dims}")
        if not callable(getattr(library, name, None)):
            raise ValueError(f"model {spec!r}: segmentation_models_pytorch has no architecture {name!r}")
        options = {"encoder_weights": None, **options, "in_channels": in_channels, "classes": out_channels}
        return getattr(library, name)(**options)
    from monai.networks import nets

    if not callable(getattr(nets, name, None)):
        raise ValueError(f"model {spec!r}: monai.networks.nets has no network {name!r}")
    options = {**options, "spatial_dims": dims, "in_channels": in_channels, "out_channels": out_channels}
    if name == "DynUNet":
        options = _dynunet_defaults(options, depth)
        if deep_supervision:
            options.setdefault("deep_supervision", True)
            options.setdefault("deep_supr_num", max(len(options["strides"]) - 2, 1))
        network = getattr(nets, name)(**options)
        return StackedToList(network) if options.get("deep_supervision") else network
    if deep_supervision:
        raise ValueError(f"model {spec!r}: deep supervision is offered by unet and monai:DynUNet only")
    return getattr(nets, name)(**options)


def check_model_input(model: nn.Module, spec: str, in_channels: int, size: tuple[int, ...]) -> None:
    """A dummy forward of one ``(1, in_channels, *size)`` patch: a clear error naming ``spec`` and
    the size when the network cannot take it (e.g. smp's Unet needs multiples of 32)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, in_channels, *size))
    except Exception as error:  # the networks raise many kinds; the message is what matters
        needed = _needed_multiple(spec)
        hint = f"; sizes must be multiples of {needed}" if needed else ""
        raise ValueError(f"model {spec!r} cannot take patches of size {tuple(size)} with "
                         f"{in_channels} channel(s){hint} ({type(error).__name__}: {error})") from None
    finally:
        model.train(was_training)
    if tuple(output.shape[2:]) != tuple(size):
        needed = _needed_multiple(spec)
        hint = f"; use sizes that are multiples of {needed}" if needed else ""
        raise ValueError(f"model {spec!r} turns patches of size {tuple(size)} into "
                         f"{tuple(output.shape[2:])}{hint}")


def _needed_multiple(spec: str) -> int | None:
    prefix, _, options = parse_model_spec(spec)
    if prefix == "smp":
        return 2 ** int(options.get("encoder_depth", 5))
    return None
