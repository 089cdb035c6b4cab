"""MobileAgeNet's architecture and output contract."""
import torch

from ab.nn import registry


def build(prm=None, size=64):
    module = registry.load(registry.MODEL, "MobileAgeNet")
    return module.Net((1, 3, size, size), (1,), {"lr": 1e-3, "momentum": 0.9, "dropout": 0.2, **(prm or {})}, "cpu")


def test_parameter_count_matches_the_paper():
    assert sum(p.numel() for p in build().parameters()) == 3_218_225


def test_forward_gives_one_age_per_image_within_the_range():
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(5, 3, 64, 64))
        extreme = model(torch.full((2, 3, 64, 64), 1e4))
    assert out.shape == (5, 1)
    assert torch.all((extreme >= 0) & (extreme <= 116)) and torch.all((out >= 0) & (out <= 116))


def test_untrained_head_starts_at_the_given_age():
    model = build()
    model.start_at_age(33.3)
    assert abs(float(torch.sigmoid(model.head[-1].bias.detach())) * 116 - 33.3) < 1e-3
