"""Multiply-adds a model spends on one image (a forward pass at batch 1), counted by hooks on
convolutions and linear layers: the arithmetic that dominates these models, and the basis of the
latency floor. A layer's whole output counts, so a model that runs more than one pass per image
inside (MobileAgeNet's ``flip_average``) is charged for each."""
from __future__ import annotations

import math

import torch
from torch import nn


def count_macs(model: nn.Module, in_shape) -> int:
    total = 0

    def conv(module: nn.Conv2d, _inputs, output):
        nonlocal total
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        total += output.numel() * per_output

    def linear(module: nn.Linear, _inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *tuple(in_shape)[1:])))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return total
