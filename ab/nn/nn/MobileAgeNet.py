"""MobileAgeNet: MobileNetV3-Large features + a compact age head, bounded age output, two-stage
fine-tuning; the age head is a hyperparameter.

Kumar, Baiju, Timofte, Ignatov, "MobileAgeNet: Lightweight Facial Age Estimation for Mobile
Deployment", arXiv:2604.17007 (2026). Head: global pooling -> Linear(960, 256) -> Hardswish ->
Dropout -> Linear(256, 1) (3,218,225 parameters in all). The authors' recipe: ImageNet weights,
the backbone frozen for the first epochs, then everything with the backbone's learning rate
x0.1, AdamW, L1 loss, output bounded to [0, 116], training targets clipped to [1, 95].

Age heads (``head``; the last layer gets 1 output for regression, else 117 = one per year 0..116).
Every head answers (B, 1) ages in years in [0, 116] from ``forward``: the expected-age readout
sum_k k * softmax(z)_k is part of the graph, so ONNX and TFLite files output ages, not logits.
  regression     the paper's head: 116 * sigmoid(z) (raw z with bounded=0), L1 or smooth L1.
  dex            Rothe, Timofte, Van Gool, "DEX: Deep EXpectation of apparent age from a single
                 image", ICCVW 2015 (IJCV 2018 as "Deep expectation of real and apparent age from a
                 single image without facial landmarks"): cross-entropy on the age's 1-year bin.
  dldl           DLDL-v2: Gao, Zhou, Wu, Geng, "Age Estimation Using Expectation of Label
                 Distribution Learning", IJCAI 2018: KL divergence to a Gaussian label distribution
                 around the age (sigma 2 years), plus lambda 1 times L1 of the expected age. (DLDL,
                 Gao et al., IEEE TIP 2017, is the KL term alone.)
  mean-variance  Pan, Han, Shan, Chen, "Mean-Variance Loss for Deep Age Estimation from a Face",
                 CVPR 2018: cross-entropy + 0.2 * (mean - age)^2 / 2 + 0.05 * variance of the
                 predicted distribution (their lambda_1, lambda_2).
The mean-variance weights are the paper's; DLDL-v2's sigma and lambda are the defaults of the
unified benchmark's implementation (Paplham, Franc, "A Call to Reflect on Evaluation Practices for
Age Estimation", CVPR 2024), which ranks these heads above plain regression with the same backbone.

Hyperparameters (LEMUR: every value in [0, 1]; ``search_space()`` tells ab.nn's runner better):
  lr, dropout           as usual; momentum: SGD's momentum, or AdamW's beta1
  head                  "regression", "dex", "dldl" or "mean-variance", or a number in [0, 1]
                        picking them by quarters in that order; missing: regression
  pretrained            1: ImageNet weights (torchvision's weights API), 0: from scratch
  freeze                fraction of epoch_max with the backbone frozen (BatchNorm included); 0: one stage
  backbone_lr_mult      the backbone's learning rate relative to the head's once it trains
  bounded               regression head: >= 0.5: age = 0 + 116 * sigmoid(z); else the raw output
                        (ablation). The other heads are bounded by construction.
  sgd                   >= 0.5: SGD with Nesterov momentum; else AdamW
  smooth_l1             regression head: >= 0.5: smooth L1 loss (beta 1 year); else L1
  onecycle              >= 0.5: one-cycle schedule over epoch_max; else cosine decay
  flip_average          >= 0.5: at evaluation the age is the mean over the face and its mirror image
                        (the training augmentation flips too); in the graph, so exported files average
                        as well, at twice the inference cost. Training is unchanged. Missing: off.
"""
import math
import numbers
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

AGE_RANGE = (0.0, 116.0)
TARGET_CLIP = (1.0, 95.0)
"""Training targets are clipped to this range (the authors' choice; evaluation uses true ages)."""
BN_MOMENTUM = 0.1
"""torchvision's MobileNetV3 uses 0.01, made for long ImageNet runs; in short runs the running
statistics would lag far behind the weights and evaluation would be meaningless."""
WEIGHT_DECAY = 1e-4
GRAD_CLIP = 5.0
WEIGHTS_ENV = "MOBILEAGENET_WEIGHTS"
"""Path of a MobileNetV3-Large state dict (torchvision's keys) to use instead of a download."""
OFFLINE_ENV = "LEMUR_OFFLINE"
HEADS = ("regression", "dex", "dldl", "mean-variance")
AGE_BINS = 117
"""The distribution heads' classes: one per year of age, 0..116 (UTKFace's range)."""
DLDL_SIGMA = 2.0
DLDL_L1_WEIGHT = 1.0
MEAN_VARIANCE_WEIGHTS = (0.2, 0.05)
PRIOR_SPREAD = 20.0
"""Spread (years) of an untrained distribution head's prior when the training ages are unknown
(UTKFace: mean 33.3, standard deviation 19.9)."""


def supported_hyperparameters():
    return {"lr", "momentum", "dropout", "pretrained", "freeze", "backbone_lr_mult", "bounded", "sgd",
            "smooth_l1", "onecycle", "head", "flip_average"}


def search_space():
    """How ab.nn's runner samples this model's hyperparameters (LEMUR's runner ignores this)."""
    return {
        "head": {"choices": list(HEADS)},
        "bounded": {"choices": [0, 1]},
        "sgd": {"choices": [0, 1]},
        "smooth_l1": {"choices": [0, 1]},
        "onecycle": {"choices": [0, 1]},
        "flip_average": {"choices": [0, 1]},
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "batch": {"choices": [32, 64, 128]},
    }


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


class PretrainedWeightsUnavailable(RuntimeError):
    """``pretrained=1`` was asked for but no ImageNet weights could be found or downloaded."""


def pretrained_available() -> bool:
    """Whether ImageNet weights are here without a download (``$MOBILEAGENET_WEIGHTS`` or torch hub's
    cache): where they are not, ab.nn's runner does not sample ``pretrained`` (LEMUR ignores this)."""
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit).is_file()
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return any((cache / os.path.basename(w.url)).exists()
               for w in (MobileNet_V3_Large_Weights.IMAGENET1K_V2, MobileNet_V3_Large_Weights.IMAGENET1K_V1))


def imagenet_backbone() -> nn.Module:
    """MobileNetV3-Large with ImageNet weights: from ``$MOBILEAGENET_WEIGHTS``, else torch hub's
    cache (V2, then V1), else a download through torchvision's weights API."""
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        model = mobilenet_v3_large(weights=None)
        state = torch.load(explicit, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model
    choices = (MobileNet_V3_Large_Weights.IMAGENET1K_V2, MobileNet_V3_Large_Weights.IMAGENET1K_V1)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for weights in choices:
        if (cache / os.path.basename(weights.url)).exists():
            return mobilenet_v3_large(weights=weights)
    reason = "offline ($LEMUR_OFFLINE is set)"
    if not os.environ.get(OFFLINE_ENV):
        try:
            return mobilenet_v3_large(weights=choices[0])
        except Exception as error:  # no network, refused, interrupted download
            reason = f"download failed: {type(error).__name__}: {error}"
    raise PretrainedWeightsUnavailable(
        f"pretrained=1 needs ImageNet weights for MobileNetV3-Large, and none are available: {reason}. "
        f"Put {os.path.basename(choices[0].url)} into {cache}, or set {WEIGHTS_ENV}=/path/to/state_dict.pth, "
        f"or train with pretrained=0 (--pretrained 0)")


def _on(prm, name, default=0.0) -> bool:
    return float(prm.get(name, default)) >= 0.5


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        head = head_choice(prm.get("head"))  # a bad value fails before the backbone is built
        self.device = device
        backbone = imagenet_backbone() if _on(prm, "pretrained") else mobilenet_v3_large(weights=None)
        self.features = backbone.features
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = AgeReadout(head, _on(prm, "bounded", 1.0))
        outputs = out_shape[0] if self.readout.outputs == 1 else self.readout.outputs
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(960, 256), nn.Hardswish(),
                                  nn.Dropout(float(prm.get("dropout", 0.2))), nn.Linear(256, outputs))
        self.bounded = self.readout.bounded
        self.flip_average = _on(prm, "flip_average")
        self.age_low, self.age_high = AGE_RANGE
        self._bias_ready = False
        self.epoch = 0

    def logits(self, x):
        """The last layer's outputs: what the head's loss scores (``forward`` reads ages from them)."""
        if not torch.compiler.is_exporting():
            x = x.contiguous(memory_format=torch.channels_last)  # 1.5-1.9x faster on CPU (measured)
        return self.head(self.pool(self.features(x)))

    def forward(self, x):
        if self.flip_average and not self.training:  # one pass over the faces and their mirrors
            ages = self.readout(self.logits(torch.cat((x, torch.flip(x, dims=(-1,))))))
            return ages.reshape(2, -1, ages.shape[-1]).mean(dim=0)
        return self.readout(self.logits(x))

    def start_at_age(self, age: float, spread: float = PRIOR_SPREAD) -> None:
        """Set the last bias so that an untrained head predicts ``age`` (the training mean; the
        distribution heads start from a prior of ``spread`` years around it)."""
        with torch.no_grad():
            self.head[-1].bias.copy_(self.readout.start_bias(age, spread))
        self._bias_ready = True

    # -- training ------------------------------------------------------------------------------
    def train_setup(self, prm):
        self.to(self.device, memory_format=torch.channels_last)
        self.prm = dict(prm)
        self.epoch_max = int(prm.get("epoch_max", 1))
        self.frozen_epochs = round(float(prm.get("freeze", 0.0)) * self.epoch_max)
        lr = float(prm["lr"])
        groups = [{"params": list(self.features.parameters()), "lr": lr * float(prm.get("backbone_lr_mult", 1.0)),
                   "name": "backbone"},
                  {"params": list(self.head.parameters()), "lr": lr, "name": "head"}]
        momentum = min(max(float(prm.get("momentum", 0.9)), 0.0), 0.999)
        if _on(prm, "sgd"):
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0,
                                             weight_decay=WEIGHT_DECAY)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), weight_decay=WEIGHT_DECAY)
        self.criteria = (AgeLoss(self.readout, _on(prm, "smooth_l1")),)
        self.scheduler = None

    def _schedule(self, steps_per_epoch: int) -> None:
        """Per-batch schedule over all ``epoch_max`` epochs (a time-limited epoch just ends early)."""
        self.total_steps = max(1, steps_per_epoch * self.epoch_max)
        if _on(self.prm, "onecycle"):
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=[g["lr"] for g in self.optimizer.param_groups],
                total_steps=self.total_steps, pct_start=0.2)
        else:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)

    @property
    def backbone_frozen(self) -> bool:
        return self.epoch <= self.frozen_epochs

    def learn(self, train_data):
        self.epoch += 1
        frozen = self.backbone_frozen
        for parameter in self.features.parameters():
            parameter.requires_grad_(not frozen)
        self.train()
        if frozen:
            self.features.eval()  # keep the BatchNorm statistics of a frozen backbone frozen too
        if self.scheduler is None:
            self._schedule(len(train_data))
        ages = getattr(getattr(train_data, "dataset", None), "ages", None)
        if not self._bias_ready and ages is not None and len(ages):
            ages = torch.as_tensor(ages, dtype=torch.float64).reshape(-1)
            self.start_at_age(float(ages.mean()), float(ages.std(correction=0)))
        low, high = TARGET_CLIP
        total, count = 0.0, 0
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self.logits(inputs), labels.clamp(low, high))
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), GRAD_CLIP)
            self.optimizer.step()
            if self.scheduler.last_epoch < self.total_steps:
                self.scheduler.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
