"""SSR-Net: soft stagewise regression for age, about 40k parameters, 64x64 input.

Yang, Huang, Lin, Hsiu, Chuang, "SSR-Net: A Compact Soft Stagewise Regression Network for Age
Estimation", IJCAI 2018 (reference implementation: shamangary/SSR-Net). Written here from the
paper: two streams of four 3x3 conv blocks (32 channels, ReLU, average pooling; 16 channels,
tanh, max pooling); three stages of 3 bins each, taken from the streams at decreasing depths;
every stage predicts a distribution over its bins, a shift of each bin (local index offset) and
a scale of its range (dynamic range). Age = V * sum_k sum_i p_ik (i + offset_ik) / prod_j s_j (1 +
delta_j), V = 116. The bin distributions are softmaxes, as in the paper (the Keras code uses
ReLU). Pooling ahead of each stage is sized from ``in_shape`` (64x64 reproduces the paper). The
last layers of every stage start at zero (no bin offsets, no range scaling, uniform bins) except
stage 1's bin bias, set so that the untrained network predicts the training mean age, like every
model here.
Self-contained on purpose: LEMUR copies model files alone.
"""
import torch
from torch import nn

AGE_RANGE = (0.0, 116.0)
TARGET_CLIP = (1.0, 95.0)
STAGES = (3, 3, 3)


def search_space():
    """How ab.nn's runner samples this model's hyperparameters (LEMUR's runner ignores this): ranges that
    train on a CPU instead of LEMUR's batch 1..4096 and lr up to 1."""
    return {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "batch": {"choices": [32, 64, 128]}}


def supported_input_sizes():
    """The input sizes ab.nn's runner samples transforms for (LEMUR's runner ignores this): 64x64 only,
    the paper's design: its pooling ahead of each stage is sized for it, and the cost grows with the
    square of the side (160 px: 122 M MACs) with nothing in the design to use the extra pixels."""
    return [64]


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


def _block(cin, cout, activation, pool):
    layers = [nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), activation()]
    return nn.Sequential(*layers, pool(2)) if pool else nn.Sequential(*layers)


class _Stream(nn.Module):
    def __init__(self, width, activation, pool):
        super().__init__()
        self.blocks = nn.ModuleList([_block(3, width, activation, pool), _block(width, width, activation, pool),
                                     _block(width, width, activation, pool), _block(width, width, activation, None)])

    def forward(self, x):
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs  # after block 1 (stage 3), block 2 (stage 2), block 4 (stage 1)


def _sizes(size):
    """Spatial sizes after each of the four blocks for a square input."""
    out = []
    for pooled in (True, True, True, False):
        size = size - 2
        size = size // 2 if pooled else size
        out.append(size)
    return out


class _Stage(nn.Module):
    """One stage: 1x1 conv + pooling + dense per stream, fused by product, then bin probabilities,
    bin offsets and the range scale."""

    def __init__(self, bins, widths, spatial, target, dropout):
        super().__init__()
        kernel = max(1, spatial // target)
        out = spatial // kernel
        self.x = nn.Sequential(nn.Conv2d(widths[0], 10, 1), nn.ReLU(), nn.AvgPool2d(kernel), nn.Flatten(),
                               nn.Dropout(dropout), nn.Linear(10 * out * out, bins), nn.ReLU())
        self.s = nn.Sequential(nn.Conv2d(widths[1], 10, 1), nn.ReLU(), nn.MaxPool2d(kernel), nn.Flatten(),
                               nn.Dropout(dropout), nn.Linear(10 * out * out, bins), nn.ReLU())
        self.delta = nn.Sequential(nn.Linear(bins, 1), nn.Tanh())
        self.feature = nn.Sequential(nn.Linear(bins, 2 * bins), nn.ReLU())
        self.probability = nn.Linear(2 * bins, bins)
        self.offset = nn.Sequential(nn.Linear(2 * bins, bins), nn.Tanh())

    def forward(self, x, s):
        fused = self.x(x) * self.s(s)
        feature = self.feature(fused)
        return torch.softmax(self.probability(feature), dim=1), self.offset(feature), self.delta(fused)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        dropout = float(prm.get("dropout", 0.2))
        self.x_stream = _Stream(32, nn.ReLU, nn.AvgPool2d)
        self.s_stream = _Stream(16, nn.Tanh, nn.MaxPool2d)
        sizes = _sizes(int(in_shape[2]))
        self.stages = nn.ModuleList([_Stage(STAGES[0], (32, 16), sizes[3], 4, dropout),
                                     _Stage(STAGES[1], (32, 16), sizes[1], 3, dropout),
                                     _Stage(STAGES[2], (32, 16), sizes[0], 3, dropout)])
        self._bias_ready = False

    def start_at_age(self, age: float) -> None:
        """Untrained, offsets and range scales are ~0, so age ~ V * sum_k E_k / prod s: choose stage
        1's expected bin E_1 for ``age`` with stages 2 and 3 uniform (E = (s - 1) / 2)."""
        later = sum((bins - 1) / 2 / torch.tensor(STAGES[:k + 1]).prod().item() for k, bins in enumerate(STAGES)
                    if k > 0)
        expected = min(max((age / AGE_RANGE[1] - later) * STAGES[0], 0.0), STAGES[0] - 1.0)
        low = min(int(expected), STAGES[0] - 2)
        target = torch.zeros(STAGES[0])
        target[low], target[low + 1] = low + 1 - expected, expected - low
        with torch.no_grad():
            for k, stage in enumerate(self.stages):
                for layer in (stage.probability, stage.offset[0], stage.delta[0]):  # offsets and scales start at 0
                    layer.weight.zero_()
                    layer.bias.zero_()
                if k == 0:
                    stage.probability.bias.copy_(torch.log(target + 1e-3))
        self._bias_ready = True

    def forward(self, x):
        xs, ss = self.x_stream(x), self.s_stream(x)
        taps = ((xs[3], ss[3]), (xs[1], ss[1]), (xs[0], ss[0]))
        age, scale = 0.0, 1.0
        for stage, bins, (a, b) in zip(self.stages, STAGES, taps):
            probability, offset, delta = stage(a, b)
            scale = scale * bins * (1 + delta)
            index = torch.arange(bins, dtype=x.dtype, device=x.device)
            age = age + ((index + offset) * probability).sum(dim=1, keepdim=True) / scale
        return AGE_RANGE[1] * age

    def train_setup(self, prm):
        self.to(self.device)
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
