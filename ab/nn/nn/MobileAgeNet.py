"""MobileAgeNet: MobileNetV3-Large features + a compact regression head, bounded age output,
two-stage fine-tuning.

Kumar, Baiju, Timofte, Ignatov, "MobileAgeNet: Lightweight Facial Age Estimation for Mobile
Deployment", arXiv:2604.17007 (2026). Head: global pooling -> Linear(960, 256) -> Hardswish ->
Dropout -> Linear(256, 1) (3,218,225 parameters in all). The authors' recipe: ImageNet weights,
the backbone frozen for the first epochs, then everything with the backbone's learning rate
x0.1, AdamW, L1 loss, output bounded to [0, 116], training targets clipped to [1, 95].

Hyperparameters (LEMUR: every value in [0, 1]):
  lr, dropout           as usual; momentum: SGD's momentum, or AdamW's beta1
  pretrained            1: ImageNet weights (torchvision's weights API), 0: from scratch
  freeze                fraction of epoch_max with the backbone frozen (BatchNorm included); 0: one stage
  backbone_lr_mult      the backbone's learning rate relative to the head's once it trains
  bounded               >= 0.5: age = 0 + 116 * sigmoid(z); else the raw output (ablation)
  sgd                   >= 0.5: SGD with Nesterov momentum; else AdamW
  smooth_l1             >= 0.5: smooth L1 loss (beta 1 year); else L1
  onecycle              >= 0.5: one-cycle schedule over epoch_max; else cosine decay
"""
import math
import os
from pathlib import Path

import torch
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


def supported_hyperparameters():
    return {"lr", "momentum", "dropout", "pretrained", "freeze", "backbone_lr_mult", "bounded", "sgd",
            "smooth_l1", "onecycle"}


class PretrainedWeightsUnavailable(RuntimeError):
    """``pretrained=1`` was asked for but no ImageNet weights could be found or downloaded."""


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
        self.device = device
        backbone = imagenet_backbone() if _on(prm, "pretrained") else mobilenet_v3_large(weights=None)
        self.features = backbone.features
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(960, 256), nn.Hardswish(),
                                  nn.Dropout(float(prm.get("dropout", 0.2))), nn.Linear(256, out_shape[0]))
        self.bounded = _on(prm, "bounded", 1.0)
        self.age_low, self.age_high = AGE_RANGE
        self._bias_ready = False
        self.epoch = 0

    def forward(self, x):
        if not torch.compiler.is_exporting():
            x = x.contiguous(memory_format=torch.channels_last)  # 1.5-1.9x faster on CPU (measured)
        z = self.head(self.pool(self.features(x)))
        if self.bounded:
            return self.age_low + (self.age_high - self.age_low) * torch.sigmoid(z)
        return z

    def start_at_age(self, age: float) -> None:
        """Set the last bias so that an untrained head predicts ``age`` (the training mean)."""
        if self.bounded:
            p = min(max((age - self.age_low) / (self.age_high - self.age_low), 1e-3), 1 - 1e-3)
            age = math.log(p / (1 - p))
        with torch.no_grad():
            self.head[-1].bias.fill_(age)
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
        self.criteria = (nn.SmoothL1Loss(beta=1.0) if _on(prm, "smooth_l1") else nn.L1Loss(),)
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
            self.start_at_age(float(sum(ages) / len(ages)))
        low, high = TARGET_CLIP
        total, count = 0.0, 0
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self(inputs), labels.clamp(low, high))
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), GRAD_CLIP)
            self.optimizer.step()
            if self.scheduler.last_epoch < self.total_steps:
                self.scheduler.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
