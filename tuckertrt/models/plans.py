"""Read nnU-Net v2 plans in both formats (the old one of the TotalSegmentator weights and the
``architecture`` entry of nnU-Net >= 2.3) into an architecture description and a :class:`ModelSpec`."""
from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.spec import IntensityProperties, ModelSpec

SUPPORTED_CLASSES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
_IMPORT_PREFIXES = ("torch.nn.", "dynamic_network_architectures.")
READER_AXES = {"SimpleITKIO": "zyx", "NibabelIO": "xyz", "NibabelIOWithReorient": "xyz"}


@dataclass(frozen=True)
class Architecture:
    """A network class (dotted path) and its constructor kwargs, with op names still as strings."""

    class_path: str
    kwargs: dict[str, Any]
    requires_import: tuple[str, ...]

    def build(self, input_channels: int, num_classes: int, deep_supervision: bool = False):
        cls = import_dotted(self.class_path)
        kwargs = {k: (import_dotted(v) if k in self.requires_import and v is not None else v)
                  for k, v in self.kwargs.items()}
        try:
            return cls(input_channels=input_channels, num_classes=num_classes,
                       deep_supervision=deep_supervision, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError, IndexError, KeyError) as e:
            raise TuckerTRTError(f"cannot build {self.class_path.rsplit('.', 1)[-1]} from the plans: {e}") from None


def import_dotted(path: str):
    if not path.startswith(_IMPORT_PREFIXES):
        raise TuckerTRTError(f"plans name an import outside torch.nn/dynamic_network_architectures: {path}")
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise TuckerTRTError(f"plans name {path}, which cannot be imported") from None


@contextlib.contextmanager
def _malformed(what: str) -> Iterator[None]:
    """Turn a missing key or a value of the wrong type in plans/dataset JSON into a one-line error."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise TuckerTRTError(f"{what} is malformed ({str(detail).splitlines()[0][:160]})") from None


def configuration(plans: dict, name: str = "3d_fullres") -> dict:
    """Resolve a configuration, following nnU-Net's ``inherits_from``."""
    with _malformed("plans.json"):
        return _configuration(plans, name, ())


def _configuration(plans: dict, name: str, seen: tuple[str, ...]) -> dict:
    if name in seen:
        raise TuckerTRTError(f"plans configurations inherit in a cycle: {' -> '.join((*seen, name))}")
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or name not in configs:
        raise TuckerTRTError(f"plans have no configuration '{name}' (have: {sorted(configs or {})})")
    cfg = dict(configs[name])
    if "inherits_from" in cfg:
        parent = _configuration(plans, cfg.pop("inherits_from"), (*seen, name))
        parent.update(cfg)
        cfg = parent
    return cfg


def architecture(cfg: dict) -> Architecture:
    """The architecture entry (new format) or its reconstruction from the old keys, as nnU-Net >= 2.3 does."""
    with _malformed("plans.json"):
        return _architecture(cfg)


def _architecture(cfg: dict) -> Architecture:
    if "architecture" in cfg:
        arch = cfg["architecture"]
        return Architecture(arch["network_class_name"], dict(arch["arch_kwargs"]),
                            tuple(arch.get("_kw_requires_import", ())))
    try:
        class_name = cfg["UNet_class_name"]
        conv_kernel_sizes = cfg["conv_kernel_sizes"]
        strides = cfg["pool_op_kernel_sizes"]
        base = cfg["UNet_base_num_features"]
        max_features = cfg["unet_max_num_features"]
        n_enc = cfg["n_conv_per_stage_encoder"]
        n_dec = cfg["n_conv_per_stage_decoder"]
    except KeyError as e:
        raise TuckerTRTError(f"plans configuration lacks both 'architecture' and the old key {e}") from None
    if class_name not in SUPPORTED_CLASSES:
        raise TuckerTRTError(f"unsupported network class {class_name} (supported: {', '.join(SUPPORTED_CLASSES)})")
    dim = len(conv_kernel_sizes[0])
    n_stages = len(conv_kernel_sizes)
    kwargs: dict[str, Any] = {
        "n_stages": n_stages,
        "features_per_stage": [min(base * 2**i, max_features) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": conv_kernel_sizes,
        "strides": strides,
        "n_blocks_per_stage" if class_name == "ResidualEncoderUNet" else "n_conv_per_stage": n_enc,
        "n_conv_per_stage_decoder": n_dec,
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return Architecture(SUPPORTED_CLASSES[class_name], kwargs, ("conv_op", "norm_op", "dropout_op", "nonlin"))


def labels_from_dataset(dataset: dict) -> dict[int, str]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise TuckerTRTError("dataset.json has no 'labels'")
    out: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise TuckerTRTError("region-based nnU-Net models (label lists in dataset.json) are not supported")
        out[int(value)] = name
    if sorted(out) != list(range(len(out))):
        raise TuckerTRTError("dataset.json labels must be the consecutive integers 0..N-1")
    return out


def model_spec(name: str, plans: dict, dataset: dict, config_name: str = "3d_fullres") -> ModelSpec:
    with _malformed("plans.json/dataset.json"):
        return _model_spec(name, plans, dataset, config_name)


def _model_spec(name: str, plans: dict, dataset: dict, config_name: str) -> ModelSpec:
    cfg = configuration(plans, config_name)
    arch = architecture(cfg)
    labels = labels_from_dataset(dataset)
    channels = dataset.get("channel_names") or dataset.get("modality") or {"0": "CT"}
    norm = cfg.get("normalization_schemes", ["CTNormalization"])[0]
    props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0")
    intensity = None
    if props:
        intensity = IntensityProperties(float(props["mean"]), float(props["std"]),
                                        float(props["percentile_00_5"]), float(props["percentile_99_5"]))
    elif norm == "CTNormalization":
        raise TuckerTRTError("plans use CTNormalization but have no foreground_intensity_properties_per_channel")
    strides = arch.kwargs["strides"]
    down = tuple(math.prod(s[a] if isinstance(s, (list, tuple)) else s for s in strides)
                 for a in range(len(cfg["patch_size"])))
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    return ModelSpec(
        name=name,
        patch_size=tuple(int(p) for p in cfg["patch_size"]),
        spacing=tuple(float(s) for s in cfg["spacing"]),
        num_classes=len(labels),
        labels=labels,
        normalization=norm,
        intensity=intensity,
        reader_axes=READER_AXES.get(reader, "zyx"),
        transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))),
        transpose_backward=tuple(plans.get("transpose_backward", (0, 1, 2))),
        input_channels=len(channels),
        downsampling=down,
    )
