"""MobileAgeNet: MobileNetV3-Large features + a compact regression head, bounded age output.

Kumar, Baiju, Timofte, Ignatov, "MobileAgeNet: Lightweight Facial Age Estimation for Mobile
Deployment", arXiv:2604.17007 (2026). Head: global pooling -> Linear(960, 256) -> Hardswish ->
Dropout -> Linear(256, 1); the output is squashed into the age range with a sigmoid
(3,218,225 parameters in all).
"""
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large

AGE_RANGE = (0.0, 116.0)
BN_MOMENTUM = 0.1
"""torchvision's MobileNetV3 uses 0.01, made for long ImageNet runs; in short runs the running
statistics would lag far behind the weights and evaluation would be meaningless."""


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.features = mobilenet_v3_large(weights=None).features
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(960, 256), nn.Hardswish(),
                                  nn.Dropout(float(prm.get("dropout", 0.2))), nn.Linear(256, out_shape[0]))
        self.age_low, self.age_high = AGE_RANGE
        self._bias_ready = False

    def start_at_age(self, age: float) -> None:
        """Set the last bias so that an untrained head predicts ``age`` (the training mean)."""
        p = (age - self.age_low) / (self.age_high - self.age_low)
        p = min(max(p, 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.head[-1].bias.fill_(float(torch.logit(torch.tensor(p))))
        self._bias_ready = True

    def forward(self, x):
        z = self.head(self.pool(self.features(x)))
        return self.age_low + (self.age_high - self.age_low) * torch.sigmoid(z)

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.L1Loss(),)
        beta1 = min(max(float(prm.get("momentum", 0.9)), 0.0), 0.999)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=prm["lr"], betas=(beta1, 0.999), weight_decay=1e-4)

    def learn(self, train_data):
        self.train()
        ages = getattr(getattr(train_data, "dataset", None), "ages", None)
        if not self._bias_ready and ages is not None and len(ages):
            self.start_at_age(float(sum(ages) / len(ages)))
        total, count = 0.0, 0
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 5.0)
            self.optimizer.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
