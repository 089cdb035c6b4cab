"""ResNet-50 age regressor: torchvision's ResNet-50 with its classifier replaced by a bounded age head.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
Backbone: ``torchvision.models.resnet50`` (23.51M parameters with the head); head: Dropout -> Linear(2048, 1), age =
116 * sigmoid(z). Trained like MobileAgeNet (AdamW, L1 on targets clipped to [1, 95], one-cycle
schedule over epoch_max, gradient clipping, head bias at the training mean). Self-contained on
purpose: LEMUR copies model files alone.
"""
import math

import torch
from torch import nn
from torch import nn
from torchvision.models import resnet50

AGE_RANGE = (0.0, 116.0)
TARGET_CLIP = (1.0, 95.0)


def supported_hyperparameters():
    return {"lr", "momentum", "dropout", "pretrained"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        weights = "DEFAULT" if float(prm.get("pretrained", 0)) >= 0.5 else None  # torchvision's weights API
        backbone = resnet50(weights=weights)
        backbone.fc = nn.Identity()
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1  # short runs: running statistics must keep up with the weights
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(float(prm.get("dropout", 0.2))), nn.Linear(2048, out_shape[0]))
        self._bias_ready = False

    def forward(self, x):
        if not torch.compiler.is_exporting():
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.head(torch.flatten(self.backbone(x), 1))
        return AGE_RANGE[0] + (AGE_RANGE[1] - AGE_RANGE[0]) * torch.sigmoid(z)

    def start_at_age(self, age):
        p = min(max((age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0]), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.head[-1].bias.fill_(math.log(p / (1 - p)))
        self._bias_ready = True

    def train_setup(self, prm):
        self.to(self.device, memory_format=torch.channels_last)
        self.epoch_max = int(prm.get("epoch_max", 1))
        momentum = min(max(float(prm.get("momentum", 0.9)), 0.0), 0.999)
        self.criteria = (nn.L1Loss(),)
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
            self.start_at_age(float(sum(ages) / len(ages)))
        total, count = 0.0, 0
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self(inputs), labels.clamp(*TARGET_CLIP))
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 5.0)
            self.optimizer.step()
            if self.scheduler.last_epoch < self.total_steps:
                self.scheduler.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
