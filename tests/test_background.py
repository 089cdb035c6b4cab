"""Background replacement (``norm_<size>_bg``, ``_bg75``, ``_bgs``): the face stays, the crop's surroundings become a random
texture, the same for the same seed, and evaluation never sees it."""
import pytest
import torch

from ab.nn import registry
from ab.nn.transform import _background as background
from ab.nn.transform._background import ReplaceBackground

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def face(side: int = 96) -> torch.Tensor:
    return torch.randint(0, 256, (3, side, side), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_masks_keep_the_middle_and_drop_the_corners():
    border = background.border_mask(96, 96, inset=0.05, fade=0.2)
    assert border[48, 48] == 1 and border[0, 0] == 0 and border[0, 48] == 0
    assert 0 < border[20, 48] < 1  # 21 % in: on the fade
    ellipse = background.ellipse_mask(96, 80, centre=(0.5, 0.5), radii=(0.4, 0.45), feather=0.1)
    assert ellipse[48, 40] == 1 and ellipse[0, 0] == 0 and ellipse[95, 79] == 0
    assert ellipse.shape == (96, 80)


def test_the_face_is_kept_and_the_corners_are_replaced():
    image = face()
    torch.manual_seed(0)
    changed = 0
    for _ in range(40):
        out = ReplaceBackground(p=1.0)(image)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        assert torch.equal(out[:, 40:56, 40:56], image[:, 40:56, 40:56])
        changed += not torch.equal(out[:, :4, :4], image[:, :4, :4])
    assert changed >= 36


def test_every_texture_family_fills_the_image_in_range():
    image = face(64)
    torch.manual_seed(3)
    for family in background.FAMILIES:
        textures = [background.texture(image, family) for _ in range(5)]
        for texture in textures:
            assert texture.shape == image.shape and texture.min() >= 0 and texture.max() <= 255
        assert textures[0].std() > 0 and not torch.equal(textures[0], textures[1])
    with pytest.raises(ValueError, match="unknown texture family"):
        background.texture(image, "plaid")


def test_the_same_seed_gives_the_same_crop_and_p_0_none():
    image = face()
    torch.manual_seed(7)
    first = [ReplaceBackground(0.5)(image) for _ in range(6)]
    torch.manual_seed(7)
    again = [ReplaceBackground(0.5)(image) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert 0 < sum(not torch.equal(a, image) for a in first) < 6
    assert torch.equal(ReplaceBackground(0.0)(image), image)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReplaceBackground(1.5)
    with pytest.raises(ValueError, match="families must be some of colour, skin, tiles, noise, shapes"):
        ReplaceBackground(1.0, ("colour", "plaid"))
    with pytest.raises(TypeError, match="uint8 CHW"):
        ReplaceBackground(1.0)(face().float())


def test_the_bg_transforms_evaluate_like_the_plain_ones_and_stay_out_of_searches():
    image = face()
    for side in (64, 96, 128, 160, 224):
        plain = registry.load(registry.TRANSFORM, f"norm_{side}").transform
        for kind, share, families in (("_bg", 0.5, background.TEXTURES), ("_bg75", 0.75, background.TEXTURES),
                                      ("_bgs", 0.5, (*background.TEXTURES, "shapes"))):
            bg = registry.load(registry.TRANSFORM, f"norm_{side}{kind}").transform
            assert bg.image_size == side and bg.searched is False and getattr(plain, "searched", True)
            assert torch.equal(bg.eval_transform(NORM)(image), plain.eval_transform(NORM)(image))
            replace = bg(NORM)._augment.transforms[0]
            assert isinstance(replace, ReplaceBackground) and (replace.p, replace.families) == (share, families)
    training = registry.load(registry.TRANSFORM, "norm_96_bg").transform(NORM)
    torch.manual_seed(0)
    outs = [training(image) for _ in range(8)]
    assert all(o.shape == (3, 96, 96) and o.dtype == torch.float32 for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])


def test_shapes_are_flat_regions_with_hard_edges_and_only_bgs_draws_them(monkeypatch):
    """``shapes`` is mostly flat colour (a gradient, filled shapes) with edges where a shape ends, unlike the
    smooth ``colour`` fields; ``bg`` and ``bg75`` never draw it (their seeded runs stay as they were),
    ``bgs`` draws it among the others."""
    image = face(96)
    torch.manual_seed(5)
    shapes = [background.texture(image, "shapes") for _ in range(20)]
    colour = [background.texture(image, "colour") for _ in range(20)]

    def edges(texture):  # share of neighbouring pixels that differ by more than 40 of 255
        return float(((texture[:, :, 1:] - texture[:, :, :-1]).abs().amax(0) > 40).float().mean())

    assert sum(edges(t) for t in shapes) / 20 > 0.002 and max(edges(t) for t in colour) == 0
    drawn = []
    texture = background.texture
    monkeypatch.setattr(background, "texture", lambda image, family: drawn.append(family) or texture(image, family))
    for name, families in (("norm_96_bg", set(background.TEXTURES)), ("norm_96_bg75", set(background.TEXTURES)),
                           ("norm_96_bgs", set(background.FAMILIES))):
        replace = registry.load(registry.TRANSFORM, name).transform(NORM)._augment.transforms[0]
        drawn.clear()
        torch.manual_seed(11)
        for _ in range(60):
            replace(image)
        assert set(drawn) == families, (name, sorted(set(drawn)))
