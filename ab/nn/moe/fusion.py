"""The AgeMoE fusion: per-expert bias correction, then a gate whose softmax weights the corrected ages.

Reconstructed from the AgeMoE paper's description (Chen, Chen, Chen, Hsu, MVA 2025; no code or
numbers were published): each expert's age passes through its own 1-D recalibration curve (a
tiny MLP, or a per-bin offset table as the simple alternative), a gating network (a small MLP
over the corrected ages, optionally with their spread) outputs one weight per expert, and the
final age is the softmax-weighted sum. The experts are never retrained; calibrators are fitted
first (each against the labels), then the gate, both with L1 on the validation split only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from torch import nn

YEARS = 100.0  # ages are scaled by this inside the networks
BIN_EDGES = np.arange(0, 125, 5, dtype=np.float64)


class MlpCalibrator(nn.Module):
    """``a -> a + YEARS * mlp(a / YEARS)``; starts as the identity."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, ages: torch.Tensor) -> torch.Tensor:
        return ages + YEARS * self.net(ages / YEARS)


class BinCalibrator(nn.Module):
    """``a -> a + offset[bin of a]`` with 5-year bins; offsets are mean residuals (closed form)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("offsets", torch.zeros(len(BIN_EDGES)))

    def fit(self, ages: np.ndarray, labels: np.ndarray, shrink: float = 5.0) -> None:
        bins = np.clip(np.searchsorted(BIN_EDGES, ages, side="right") - 1, 0, len(BIN_EDGES) - 1)
        offsets = np.zeros(len(BIN_EDGES))
        for b in range(len(BIN_EDGES)):
            residual = (labels - ages)[bins == b]
            offsets[b] = residual.sum() / (len(residual) + shrink)  # few samples: pull towards 0
        self.offsets.copy_(torch.from_numpy(offsets).float())

    def forward(self, ages: torch.Tensor) -> torch.Tensor:
        edges = torch.as_tensor(BIN_EDGES, dtype=ages.dtype, device=ages.device)
        bins = (torch.bucketize(ages.contiguous(), edges, right=True) - 1).clamp(0, len(BIN_EDGES) - 1)
        return ages + self.offsets[bins]


class AgeMoE(nn.Module):
    def __init__(self, experts: int, calibrator: str = "mlp", hidden: int = 16, gate_hidden: int = 32,
                 spread: bool = False):
        super().__init__()
        if calibrator not in ("mlp", "bins"):
            raise ValueError(f"calibrator must be 'mlp' or 'bins', got {calibrator!r}")
        self.settings = {"experts": experts, "calibrator": calibrator, "hidden": hidden,
                         "gate_hidden": gate_hidden, "spread": spread}
        make = (lambda: MlpCalibrator(hidden)) if calibrator == "mlp" else BinCalibrator
        self.calibrators = nn.ModuleList(make() for _ in range(experts))
        self.gate = nn.Sequential(nn.Linear(experts + int(spread), gate_hidden), nn.Tanh(),
                                  nn.Linear(gate_hidden, experts))
        nn.init.zeros_(self.gate[-1].weight)  # starts as the plain average of the corrected ages
        nn.init.zeros_(self.gate[-1].bias)

    def corrected(self, ages: torch.Tensor) -> torch.Tensor:
        """(N, experts) raw ages -> (N, experts) corrected ages."""
        return torch.cat([c(ages[:, i:i + 1]) for i, c in enumerate(self.calibrators)], dim=1)

    def weights(self, corrected: torch.Tensor) -> torch.Tensor:
        features = corrected / YEARS
        if self.settings["spread"]:
            features = torch.cat([features, corrected.std(dim=1, keepdim=True) / YEARS], dim=1)
        return torch.softmax(self.gate(features), dim=1)

    def forward(self, ages: torch.Tensor) -> torch.Tensor:
        corrected = self.corrected(ages)
        return (self.weights(corrected) * corrected).sum(dim=1)

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, ages: np.ndarray, labels: np.ndarray, steps: int = 800, lr: float = 1e-2, seed: int = 0,
            progress: bool = False) -> dict:
        """Fit on validation predictions ``ages`` (N, experts) and ``labels`` (N,); returns the
        training L1 after each phase."""
        torch.manual_seed(seed)
        bar = tqdm(total=len(self.calibrators) + 1, desc="fitting AgeMoE", unit="phase", disable=not progress,
                   leave=False)
        x = torch.as_tensor(ages, dtype=torch.float32)
        y = torch.as_tensor(labels, dtype=torch.float32).reshape(-1)
        for i, calibrator in enumerate(self.calibrators):
            if isinstance(calibrator, BinCalibrator):
                calibrator.fit(ages[:, i].astype(np.float64), labels.astype(np.float64))
            else:
                _minimise(calibrator.parameters(), lambda c=calibrator, i=i: (c(x[:, i:i + 1]).reshape(-1) - y).abs().mean(),
                          steps, lr)
            bar.update(1)
        with torch.no_grad():
            corrected = self.corrected(x)
        _minimise(self.gate.parameters(), lambda: ((self.weights(corrected) * corrected).sum(dim=1) - y).abs().mean(),
                  steps, lr)
        bar.close()
        with torch.no_grad():
            return {"calibrated_l1": [float((corrected[:, i] - y).abs().mean()) for i in range(x.shape[1])],
                    "mixture_l1": float((self(x) - y).abs().mean())}

    def predict(self, ages: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(ages, dtype=torch.float32)).numpy()

    # -- the reusable file -----------------------------------------------------------------------
    def save(self, path: Path, experts: list[dict]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": self.settings, "state_dict": self.state_dict(), "experts": experts}, path)
        return path

    @classmethod
    def load(cls, path: Path) -> tuple["AgeMoE", list[dict]]:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**saved["settings"])
        model.load_state_dict(saved["state_dict"])
        return model.eval(), saved["experts"]


def _minimise(parameters, loss_fn, steps: int, lr: float) -> None:
    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        scheduler.step()
