"""The torchvision comparison models (``ab/nn/nn/ResNet18.py`` ...) are generated from one template.

Each model file is written out in full, so that it stays self-contained (LEMUR copies model files one by
one; a generated file imports nothing from here). Edit ``TEMPLATE`` or ``BACKBONES`` below, never a
generated file, then write the files again::

    python -m ab.nn.nn_template           # rewrites every generated file that differs
    python -m ab.nn.nn_template --check   # only names them; exit status 1 if any differs

``tests/test_model_template.py`` fails while a generated file differs from what this module writes.

A new torchvision backbone is one row of ``BACKBONES``; e.g. ResNet-34::

    Backbone("ResNet34", "ResNet-34", 'He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", '
             "CVPR 2016.", "resnet34", "ResNet34_Weights", "fc", 512, 21.29),

then ``python -m ab.nn.nn_template`` writes ``ab/nn/nn/ResNet34.py``. The row's weights enum, feature
width and parameter count are checked against the built model by ``tests/test_model_template.py`` (its
message gives the right values), and the model contract tests cover the new file like any other.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ab.nn.util.arguments import Parser

MODEL_DIR = Path(__file__).resolve().parent / "nn"
COMMAND = "python -m ab.nn.nn_template"


@dataclass(frozen=True)
class Backbone:
    """One generated model file: what differs between the torchvision comparison models."""

    name: str  # the model's name: file ab/nn/nn/<name>.py, config part, no "_"
    title: str  # the architecture as its paper names it
    paper: str  # the citation line of the docstring
    constructor: str  # torchvision.models.<constructor>(weights=...)
    weights: str  # torchvision's weights enum of that constructor (its DEFAULT is the ImageNet file)
    classifier: str  # the attribute holding torchvision's classifier, replaced by nn.Identity()
    features: int  # width of the backbone's output once the classifier is gone: the age head's input
    parameters: float  # millions of parameters with the regression head (the docstring says it)
    variant: str = ""  # the torchvision variant, where it says more than ``title``

    def fields(self) -> dict[str, str]:
        return {"title": self.title, "variant": self.variant or self.title, "paper": self.paper,
                "constructor": self.constructor, "weights": self.weights, "classifier": self.classifier,
                "features": str(self.features), "parameters": f"{self.parameters:.2f}"}


BACKBONES = (
    Backbone("ResNet18", "ResNet-18", 'He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", '
             "CVPR 2016.", "resnet18", "ResNet18_Weights", "fc", 512, 11.18),
    Backbone("ResNet50", "ResNet-50", 'He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", '
             "CVPR 2016.", "resnet50", "ResNet50_Weights", "fc", 2048, 23.51),
    Backbone("MobileNetV2", "MobileNetV2", 'Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted '
             'Residuals and Linear Bottlenecks", CVPR 2018.', "mobilenet_v2", "MobileNet_V2_Weights", "classifier",
             1280, 2.23),
    Backbone("EfficientNetB0", "EfficientNet-B0", 'Tan, Le, "EfficientNet: Rethinking Model Scaling for '
             'Convolutional Neural Networks", ICML 2019.', "efficientnet_b0", "EfficientNet_B0_Weights",
             "classifier", 1280, 4.01),
    Backbone("ShuffleNetV2", "ShuffleNetV2", 'Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for '
             'Efficient CNN Architecture Design", ECCV 2018.', "shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights",
             "fc", 1024, 1.25, variant="ShuffleNetV2 x1.0"),
)


def render(backbone: Backbone) -> str:
    """The model file of one backbone, exactly as it is written to disk."""
    return Template(TEMPLATE).substitute(backbone.fields())


def generated(directory: Path = MODEL_DIR) -> dict[Path, str]:
    """Every generated file's path and text."""
    return {directory / f"{b.name}.py": render(b) for b in BACKBONES}


def stale(directory: Path = MODEL_DIR) -> list[Path]:
    """The generated files that are missing or differ, byte for byte, from what ``render`` writes."""
    return [path for path, text in generated(directory).items()
            if not path.is_file() or path.read_bytes() != text.encode("utf-8")]


def write(directory: Path = MODEL_DIR) -> list[Path]:
    """Write the generated files that are stale; returns them."""
    texts = generated(directory)
    changed = stale(directory)
    for path in changed:
        path.write_bytes(texts[path].encode("utf-8"))
    return changed


def main(argv=None) -> int:
    p = Parser(prog=COMMAND, description="Write the torchvision comparison models "
               "(ab/nn/nn/<name>.py) from their template in ab/nn/nn_template.py.")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file differs")
    args = p.parse_args(argv)
    if args.check:
        differ = stale()
        for path in differ:
            print(f"{path} differs from its template; run {COMMAND}")
        return 1 if differ else 0
    changed = write()
    for path in changed:
        print(f"wrote {path}")
    print(f"{len(BACKBONES) - len(changed)} of {len(BACKBONES)} generated files were up to date")
    return 0


# A whole model file; ``${field}`` stands for each field of ``Backbone.fields()`` (``$$`` for a dollar sign).
TEMPLATE = r'''"""${title} age regressor: torchvision's ${variant} with its classifier replaced by an age head.

${paper}
Backbone: ``torchvision.models.${constructor}`` (${parameters}M parameters with the regression head); head: Dropout ->
Linear(${features}, 1), age = 116 * sigmoid(z). Trained like MobileAgeNet (AdamW, L1 on targets clipped to
[1, 95], one-cycle schedule over epoch_max, gradient clipping, head bias at the training mean).
Self-contained on purpose: LEMUR copies model files alone.

``head`` chooses the age head (a name, or LEMUR's number in [0, 1] picking one by quarters in this
order; missing: regression), as in MobileAgeNet:
  regression     the head above.
  dex            Rothe, Timofte, Van Gool, "DEX: Deep EXpectation of apparent age from a single
                 image", ICCVW 2015 (IJCV 2018): cross-entropy over 117 one-year bins 0..116.
  dldl           DLDL-v2: Gao, Zhou, Wu, Geng, "Age Estimation Using Expectation of Label
                 Distribution Learning", IJCAI 2018: KL divergence to a Gaussian label distribution
                 (sigma 2 years) + 1 * L1 of the expected age.
  mean-variance  Pan, Han, Shan, Chen, "Mean-Variance Loss for Deep Age Estimation from a Face",
                 CVPR 2018: cross-entropy + 0.2 * (mean - age)^2 / 2 + 0.05 * variance.
The distribution heads end in Linear(${features}, 117) and answer the expected age sum_k k * softmax(z)_k
inside the graph, so every head's forward and its exports give (B, 1) ages in [0, 116].
"""
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ${weights}, ${constructor}

AGE_RANGE = (0.0, 116.0)
TARGET_CLIP = (1.0, 95.0)
HEADS = ("regression", "dex", "dldl", "mean-variance")
AGE_BINS = 117
DLDL_SIGMA = 2.0
DLDL_L1_WEIGHT = 1.0
MEAN_VARIANCE_WEIGHTS = (0.2, 0.05)
PRIOR_SPREAD = 20.0
"""Spread (years) of an untrained distribution head's prior when the training ages are unknown."""


def pretrained_available():
    """Whether ImageNet weights can be had without a download (torch hub's cache): where they cannot,
    ab.nn's runner does not sample ``pretrained`` (LEMUR's runner ignores this)."""
    import os
    from pathlib import Path

    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(${weights}.DEFAULT.url)).is_file()


def supported_hyperparameters():
    return {"lr", "momentum", "dropout", "pretrained", "head"}


def search_space():
    """How ab.nn's runner samples this model's hyperparameters (LEMUR's runner ignores this)."""
    return {"head": {"choices": list(HEADS)}, "lr": {"low": 1e-4, "high": 3e-3, "log": True},
            "batch": {"choices": [32, 64, 128]}}


def head_choice(value) -> str:
    """The ``head`` hyperparameter as a head name: a name from HEADS, or LEMUR's number in [0, 1]
    picking one by quarters; missing (None): regression, the behaviour before heads existed."""
    if value is None:
        return HEADS[0]
    if isinstance(value, str):
        if value in HEADS:
            return value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return HEADS[min(int(value * len(HEADS)), len(HEADS) - 1)]
    raise ValueError(f"head must be one of {', '.join(HEADS)} or a number in [0, 1], got {value!r}")


class AgeReadout(nn.Module):
    """The last layer's outputs ``z`` -> ages (B, 1) in years, inside the graph: ``head`` decides
    how (a bounded regression, or the expected age of a softmax over 1-year bins)."""

    def __init__(self, head: str, bounded: bool = True):
        super().__init__()
        self.head = head
        self.bounded = bounded or head != "regression"
        self.outputs = 1 if head == "regression" else AGE_BINS
        self.register_buffer("bins", torch.arange(AGE_BINS, dtype=torch.float32).reshape(-1, 1), persistent=False)

    def expectation(self, z):
        return torch.softmax(z, dim=1) @ self.bins

    def forward(self, z):
        low, high = AGE_RANGE
        if self.head == "regression":
            return low + (high - low) * torch.sigmoid(z) if self.bounded else z
        return self.expectation(z).clamp(low, high)  # a softmax's round-off could reach 116 + 1e-5

    def start_bias(self, age: float, spread: float) -> torch.Tensor:
        """The last layer's bias for which an untrained head (zero weights) predicts ``age``: for the
        distribution heads a Gaussian prior of ``spread`` years, shifted until its mean is ``age``."""
        low, high = AGE_RANGE
        if self.head == "regression":
            if self.bounded:
                p = min(max((age - low) / (high - low), 1e-3), 1 - 1e-3)
                age = math.log(p / (1 - p))
            return torch.full((1,), float(age))
        age = min(max(float(age), low + 0.5), high - 0.5)
        bins = torch.arange(AGE_BINS, dtype=torch.float64)
        below, above = low - 10 * high, 11 * high
        for _ in range(80):  # the mean grows with the centre: bisection
            centre = (below + above) / 2
            prior = -0.5 * ((bins - centre) / max(float(spread), 1.0)) ** 2
            if float(torch.softmax(prior, 0) @ bins) < age:
                below = centre
            else:
                above = centre
        return (prior - prior.max()).float()


class AgeLoss(nn.Module):
    """The head's training loss on the last layer's outputs ``z`` and clipped true ages (B, 1)."""

    def __init__(self, readout: AgeReadout, smooth_l1: bool = False):
        super().__init__()
        self.readout = readout
        self.regression = nn.SmoothL1Loss(beta=1.0) if smooth_l1 else nn.L1Loss()

    def forward(self, z, ages):
        head, ages = self.readout.head, ages.reshape(-1, 1).to(z.dtype)
        if head == "regression":
            return self.regression(self.readout(z), ages)
        log_p = torch.log_softmax(z, dim=1)
        if head == "dex":
            return F.nll_loss(log_p, ages.round().long().reshape(-1))
        bins = self.readout.bins
        mean = log_p.exp() @ bins
        if head == "dldl":
            target = torch.softmax(-0.5 * ((bins.reshape(1, -1) - ages) / DLDL_SIGMA) ** 2, dim=1)
            return F.kl_div(log_p, target, reduction="batchmean") + DLDL_L1_WEIGHT * (mean - ages).abs().mean()
        variance = (log_p.exp() * (bins.reshape(1, -1) - mean) ** 2).sum(dim=1)
        weight_mean, weight_variance = MEAN_VARIANCE_WEIGHTS
        return (F.nll_loss(log_p, ages.round().long().reshape(-1)) + weight_mean * ((mean - ages) ** 2).mean() / 2
                + weight_variance * variance.mean())


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        head = head_choice(prm.get("head"))  # a bad value fails before the backbone is built
        self.device = device
        weights = "DEFAULT" if float(prm.get("pretrained", 0)) >= 0.5 else None  # torchvision's weights API
        backbone = ${constructor}(weights=weights)
        backbone.${classifier} = nn.Identity()
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1  # short runs: running statistics must keep up with the weights
        self.backbone = backbone
        self.readout = AgeReadout(head)
        outputs = out_shape[0] if self.readout.outputs == 1 else self.readout.outputs
        self.head = nn.Sequential(nn.Dropout(float(prm.get("dropout", 0.2))), nn.Linear(${features}, outputs))
        self._bias_ready = False

    def logits(self, x):
        if not torch.compiler.is_exporting():
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(torch.flatten(self.backbone(x), 1))

    def forward(self, x):
        return self.readout(self.logits(x))

    def start_at_age(self, age, spread=PRIOR_SPREAD):
        with torch.no_grad():
            self.head[-1].bias.copy_(self.readout.start_bias(age, spread))
        self._bias_ready = True

    def train_setup(self, prm):
        self.to(self.device, memory_format=torch.channels_last)
        self.epoch_max = int(prm.get("epoch_max", 1))
        momentum = min(max(float(prm.get("momentum", 0.9)), 0.0), 0.999)
        self.criteria = (AgeLoss(self.readout),)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=prm["lr"], betas=(momentum, 0.999),
                                           weight_decay=1e-4)
        self.scheduler = None

    def learn(self, train_data):
        self.train()
        if self.scheduler is None:
            self.total_steps = max(1, len(train_data) * self.epoch_max)
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.optimizer.param_groups[0]["lr"], total_steps=self.total_steps,
                pct_start=0.2)
        ages = getattr(getattr(train_data, "dataset", None), "ages", None)
        if not self._bias_ready and ages is not None and len(ages):
            ages = torch.as_tensor(ages, dtype=torch.float64).reshape(-1)
            self.start_at_age(float(ages.mean()), float(ages.std(correction=0)))
        total, count = 0.0, 0
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self.logits(inputs), labels.clamp(*TARGET_CLIP))
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 5.0)
            self.optimizer.step()
            if self.scheduler.last_epoch < self.total_steps:
                self.scheduler.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
'''


if __name__ == "__main__":
    sys.exit(main())
