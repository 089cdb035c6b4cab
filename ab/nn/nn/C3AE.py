"""C3AE: a compact, multi-scale age estimator, 64x64 input.

Zhang, Liu, Wang, Lu, Liang, "C3AE: Exploring the Limits of Compact Model for Age Estimation",
CVPR 2019. Written here from the paper: one plain CNN (four 3x3 conv layers of 32 channels with
BatchNorm, ReLU and average pooling, then a 1x1 conv) is shared by three views of the face at
different scales; their features are concatenated and mapped to a "two-point representation"
(a distribution over age bins 10 years apart, supervised with KL divergence against the two bins
around the true age), whose expectation is the age. The bin layer starts with zero weights and a
bias that puts the two-point distribution of the training mean age first (so the untrained
network predicts the mean, like every model here). The paper crops three scales around a
detected face; our inputs are already aligned crops, so the views are centre crops of 100 %,
80 % and 60 % of the input, resized back to its size. Self-contained on purpose: LEMUR copies
model files alone.
"""
import torch
import torch.nn.functional as F
from torch import nn

BIN_WIDTH = 10.0
BINS = 13  # centres 0, 10, ..., 120 years
SCALES = (1.0, 0.8, 0.6)
TARGET_CLIP = (1.0, 95.0)
KL_WEIGHT = 1.0


def search_space():
    """How ab.nn's runner samples this model's hyperparameters (LEMUR's runner ignores this): ranges that
    train on a CPU instead of LEMUR's batch 1..4096 and lr up to 1."""
    return {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "batch": {"choices": [32, 64, 128]}}


def supported_input_sizes():
    """The input sizes ab.nn's runner samples transforms for (LEMUR's runner ignores this): 64x64 only,
    the paper's design: the flattened features of every view, and so the bin layer, grow with the
    square of the side."""
    return [64]


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


def two_point(ages: torch.Tensor) -> torch.Tensor:
    """The target distribution: an age's weight split between the two nearest bin centres."""
    position = (ages.reshape(-1) / BIN_WIDTH).clamp(0, BINS - 1 - 1e-6)
    low = position.floor().long()
    upper_weight = position - low
    target = torch.zeros(ages.shape[0], BINS, device=ages.device)
    target.scatter_(1, low[:, None], (1 - upper_weight)[:, None])
    target.scatter_add_(1, (low + 1).clamp(max=BINS - 1)[:, None], upper_weight[:, None])
    return target


def _conv(cin, cout, kernel, pool):
    layers = [nn.Conv2d(cin, cout, kernel), nn.BatchNorm2d(cout), nn.ReLU()]
    return layers + ([nn.AvgPool2d(2)] if pool else [])


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.size = int(in_shape[2])
        self.base = nn.Sequential(*_conv(3, 32, 3, True), *_conv(32, 32, 3, True), *_conv(32, 32, 3, True),
                                  *_conv(32, 32, 3, False), *_conv(32, 32, 1, False), nn.Flatten())
        with torch.no_grad():
            width = self.base(torch.zeros(1, 3, self.size, self.size)).shape[1]
        self.dropout = nn.Dropout(float(prm.get("dropout", 0.2)))
        self.bins = nn.Linear(len(SCALES) * width, BINS)
        self.register_buffer("centres", torch.arange(BINS, dtype=torch.float32) * BIN_WIDTH)
        self._bias_ready = False

    def start_at_age(self, age: float) -> None:
        with torch.no_grad():
            self.bins.weight.zero_()
            self.bins.bias.copy_(torch.log(two_point(torch.tensor([[age]])).reshape(-1) + 1e-3))
        self._bias_ready = True

    def views(self, x):
        out = []
        for scale in SCALES:
            if scale == 1.0:
                out.append(x)
                continue
            crop = int(round(self.size * scale))
            start = (self.size - crop) // 2
            part = x[:, :, start:start + crop, start:start + crop]
            out.append(F.interpolate(part, size=(self.size, self.size), mode="bilinear", align_corners=False))
        return out

    def distribution(self, x):
        features = torch.cat([self.base(view) for view in self.views(x)], dim=1)
        return torch.softmax(self.bins(self.dropout(features)), dim=1)

    def forward(self, x):
        return (self.distribution(x) * self.centres).sum(dim=1, keepdim=True)

    def train_setup(self, prm):
        self.to(self.device)
        self.epoch_max = int(prm.get("epoch_max", 1))
        momentum = min(max(float(prm.get("momentum", 0.9)), 0.0), 0.999)
        self.criteria = (nn.L1Loss(), nn.KLDivLoss(reduction="batchmean"))
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
            inputs, labels = inputs.to(self.device), labels.to(self.device).clamp(*TARGET_CLIP)
            if not self._bias_ready:
                self.start_at_age(labels.float().mean().item())
            self.optimizer.zero_grad(set_to_none=True)
            probability = self.distribution(inputs)
            age = (probability * self.centres).sum(dim=1, keepdim=True)
            loss = self.criteria[0](age, labels) + KL_WEIGHT * self.criteria[1](
                probability.clamp_min(1e-8).log(), two_point(labels))
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 5.0)
            self.optimizer.step()
            if self.scheduler.last_epoch < self.total_steps:
                self.scheduler.step()
            total += loss.item() * labels.shape[0]
            count += labels.shape[0]
        return total / max(count, 1)
