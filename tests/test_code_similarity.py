"""LEMUR's selection of models by code similarity (``JoinConf(similarity_mode="anchor_band_db_minhash")``):
MinHash signatures of model code that estimate the Jaccard similarity of its token shingles, stored in
``nn_minhash`` and renewed when the code changes, and the anchor-band query over real statistics rows."""
import json
from itertools import combinations

import pytest

from ab.nn import api, registry
from ab.nn.api import JoinConf
from ab.nn.stat import code_similarity, json_import, query, versions
from ab.nn.stat.store import StatStore


def layers(count: int, width: int = 8, first: int = 0) -> str:
    lines = "\n".join(f"        self.block{i} = nn.Conv2d({width * i}, {width * (i + 1)}, 3, padding=1)"
                      for i in range(first, first + count))
    return f"import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n{lines}\n"


ANCHOR = layers(40)
TWIN = ('"""The anchor, documented and reformatted: the same architecture."""\n'
        + ANCHOR.replace("padding=1)", "padding=1)  # keeps the size").replace("import torch.nn as nn",
                                                                              "import torch.nn as nn   "))
NEAR = ANCHOR.replace("self.block39 = nn.Conv2d(312, 320, 3, padding=1)", "self.block39 = nn.Linear(312, 320)")
FAR = layers(40, width=5, first=100).replace("nn.Conv2d", "nn.ConvTranspose2d")


def exact(a: str, b: str) -> float:
    x, y = code_similarity.shingles(a), code_similarity.shingles(b)
    return len(x & y) / len(x | y)


def test_signatures_estimate_the_jaccard_of_the_codes_token_shingles():
    assert exact(ANCHOR, TWIN) == 1.0  # comments, docstrings and layout are not architecture
    assert code_similarity.signature(TWIN) == code_similarity.signature(ANCHOR)
    assert len(code_similarity.signature(ANCHOR)) == 512  # LEMUR's BLOB: 128 little-endian uint32
    assert code_similarity.signature("") is None and code_similarity.signature("# nothing\n") is None
    assert code_similarity.tokens("x = 'a'.join(y)  # c\n'''doc'''\n") == ["x", "=", "'a'", ".", "join", "(", "y", ")"]
    assert code_similarity.tokens("def f(:\n  ]") == ["def", "f", "(", ":", "]"]  # does not tokenize: words and symbols
    models = {name: registry.source(registry.MODEL, name) for name in registry.names(registry.MODEL)}
    codes = {**models, "anchor": ANCHOR, "near": NEAR, "far": FAR}
    signatures = {name: code_similarity.signature(code) for name, code in codes.items()}
    errors = [code_similarity.jaccard(signatures[a], signatures[b]) - exact(codes[a], codes[b])
              for a, b in combinations(codes, 2)]
    # 128 values: standard error <= 0.044 per pair; 0.2 is 4.5 of them
    assert max(abs(e) for e in errors) < 0.2 and abs(sum(errors) / len(errors)) < 0.06
    assert 0.85 < exact(ANCHOR, NEAR) < 0.98 and exact(ANCHOR, FAR) < 0.1
    with pytest.raises(ValueError, match="different lengths"):
        code_similarity.jaccard(signatures["anchor"], signatures["anchor"][:8])


def lemur_record(accuracy: float, uid: str) -> dict:
    return {"accuracy": accuracy, "duration": 1_000_000_000, "lr": 0.01, "transform": "norm_64", "uid": uid}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def zoo(request, tmp_path):
    """Six models with statistics (LEMUR JSON, two epochs each) and code: the anchor, its reformatted
    twin, a near copy, two far ones, and a name without code (imported from LEMUR's JSON alone)."""
    url = (request.getfixturevalue("postgres_url") if request.param == "postgresql"
           else f"sqlite:///{tmp_path / 'ab.nn.db'}")
    models = {"Anchor": (0.70, ANCHOR), "Twin": (0.60, TWIN), "Near": (0.65, NEAR), "Far": (0.80, FAR),
              "Far2": (0.50, '"""Far, documented."""\n' + FAR), "NoCode": (0.90, None)}
    train = tmp_path / "stat" / "train"
    for number, (name, (accuracy, _)) in enumerate(models.items()):
        folder = train / f"age-regression_utkface_mae_{name}"
        folder.mkdir(parents=True)
        for epoch in (1, 2):
            uid = f"{number:02d}{epoch}".ljust(32, "0")
            (folder / f"{epoch}.json").write_text(json.dumps([lemur_record(accuracy - 0.01 * (2 - epoch), uid)]))
    versions.upgrade(url)
    assert json_import.import_tree(url, train, progress=False, lemur_mae_scale=20).records == 12
    store = StatStore(url)
    for name, (_, code) in models.items():
        if code is not None:
            store.save_code(registry.MODEL, name, code)
    return url


def anchor_band(url, **conf):
    return api.data(sql=JoinConf(similarity_mode="anchor_band_db_minhash", **conf), db=url)


def test_anchor_band_picks_each_models_best_row_in_the_band_most_accurate_first(zoo):
    close = anchor_band(zoo, num_joint_nns=3, anchor_nn="Anchor", min_arch_jaccard=0.8, max_arch_jaccard=1.0000001)
    assert list(close.nn) == ["Near", "Twin"]  # accuracy first; Far and Far2 are not like the anchor
    assert list(close.epoch) == [2, 2] and list(close.accuracy) == pytest.approx([0.65, 0.60])
    assert close.anchor_jaccard[1] == 1.0 and 0.8 <= close.anchor_jaccard[0] < 1.0
    assert set(close.anchor_nn) == {"Anchor"} and "nn_code" in close and close.prm[0]["lr"] == 0.01
    assert close.diversity_meta[0]["curriculum_meta"] == {
        "mode": "anchor_band_db_minhash", "anchor_nn": "Anchor", "auto_anchor": False, "band": None,
        "min_j": 0.8, "max_j": 1.0000001}
    # as in LEMUR the band's upper bound is exclusive: by default, identical code is left out
    assert list(anchor_band(zoo, num_joint_nns=3, anchor_nn="Anchor", min_arch_jaccard=0.8).nn) == ["Near"]
    twin = anchor_band(zoo, num_joint_nns=2, anchor_nn="Anchor", similarity_band="very_high")
    assert list(twin.nn) == ["Twin"]
    unlike = anchor_band(zoo, num_joint_nns=5, anchor_nn="Anchor", similarity_band="very_low_far")
    assert list(unlike.nn) == ["Far", "Far2"] and (unlike.anchor_jaccard < 0.3).all()


def test_without_an_anchor_the_most_accurate_model_with_enough_neighbours_is_the_anchor(zoo):
    # Far is the most accurate model with code (NoCode has none), but only Far2 is like it
    pair = anchor_band(zoo, num_joint_nns=1, similarity_band="very_high")
    assert pair.diversity_meta[0]["curriculum_meta"]["anchor_nn"] == "Far" and list(pair.nn) == ["Far2"]
    close = anchor_band(zoo, num_joint_nns=2, min_arch_jaccard=0.8, max_arch_jaccard=1.0000001)  # Far: 1, Anchor: 2
    assert close.diversity_meta[0]["curriculum_meta"]["auto_anchor"] is True
    assert set(close.anchor_nn) == {"Anchor"} and list(close.nn) == ["Near", "Twin"]
    with pytest.raises(ValueError, match="Auto-anchor failed: no anchor among top 5 models has >= 3"):
        anchor_band(zoo, num_joint_nns=3, similarity_band="very_high")
    with pytest.raises(ValueError, match="anchor_nn='NoCode' missing in nn_minhash"):
        anchor_band(zoo, num_joint_nns=2, anchor_nn="NoCode")
    with pytest.raises(ValueError, match="Invalid arch band: min=0.9, max=0.5"):
        anchor_band(zoo, num_joint_nns=2, min_arch_jaccard=0.9, max_arch_jaccard=0.5)


def test_signatures_are_stored_and_renewed_when_the_code_changes(zoo):
    anchor_band(zoo, num_joint_nns=2, anchor_nn="Anchor", similarity_band="very_high")
    stored = {r["nn"]: r for r in query.nn_minhash_rows(zoo)}
    assert sorted(stored) == ["Anchor", "Far", "Far2", "Near", "Twin"]
    assert {(r["num_perm"], r["shingle_n"]) for r in stored.values()} == {(128, 7)}
    assert stored["Twin"]["hashvalues"] == code_similarity.signature(TWIN)
    StatStore(zoo).save_code(registry.MODEL, "Twin", FAR)  # the file was rewritten: it is now like Far
    assert anchor_band(zoo, num_joint_nns=2, anchor_nn="Anchor", similarity_band="very_high").empty
    renewed = {r["nn"]: r for r in query.nn_minhash_rows(zoo, ["Twin"])}
    assert renewed["Twin"]["hashvalues"] == code_similarity.signature(FAR)
    assert renewed["Twin"]["code_id"] == registry.checksum(FAR)
