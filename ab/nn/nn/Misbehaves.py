"""A test model that misbehaves as $MISBEHAVE_HOW says, on its first build only ($MISBEHAVE_FLAG
marks that the first build happened), except "hopeless" (always answers 100 years), "slow",
"gated" (every epoch waits for the file $MISBEHAVE_GATE) and "export-segfault" (crashes the process
whenever it is exported)."""
import ctypes
import os
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

FLAG = Path(os.environ["MISBEHAVE_FLAG"])
HOW = os.environ["MISBEHAVE_HOW"]


def supported_hyperparameters():
    return {"lr"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.first = not FLAG.exists()
        FLAG.touch()
        self.linear = nn.Linear(in_shape[1], 1)

    def forward(self, x):
        if HOW == "export-segfault" and torch.compiler.is_exporting():
            ctypes.string_at(0)
        if HOW == "raise" and self.first:
            raise RuntimeError("forward exploded on purpose")
        if HOW == "hopeless":
            return 100 + 0 * self.linear(x.mean(dim=(2, 3)))
        return 30 + self.linear(x.mean(dim=(2, 3)))

    def train_setup(self, prm):
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])

    def learn(self, train_data):
        if self.first or HOW == "always":
            if HOW == "segfault":
                ctypes.string_at(0)
            elif HOW == "exit":
                os._exit(3)
            elif HOW == "memory":
                hog = torch.ones(3, 1024, 1024, 1024, dtype=torch.uint8)  # 3 GiB, touched
                time.sleep(30)
            elif HOW == "sleep":
                time.sleep(60)
            elif HOW == "grandchild":  # starts a process of its own, then hangs
                child = subprocess.Popen(["sleep", "600"])
                Path(os.environ["MISBEHAVE_PIDS"]).write_text(f"{os.getpid()} {child.pid}")
                time.sleep(600)
            elif HOW == "always":
                raise RuntimeError("learn exploded on purpose")
        if HOW == "slow":
            time.sleep(1.5)
        while HOW == "gated" and not Path(os.environ["MISBEHAVE_GATE"]).exists():
            time.sleep(0.2)
        for x, y in train_data:
            self.optimizer.zero_grad()
            (self(x) - y).abs().mean().backward()
            self.optimizer.step()
