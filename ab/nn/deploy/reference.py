"""PyTorch's ages, what every exported artifact is compared with, taken from the trial's own final
evaluation where that is the same computation: the trial already ran this model over every eval and test
image and recorded each prediction (``StatStore.record_predictions``), and running it again only to get the
same numbers took 8.5 to 10 s of a 256-image MobileAgeNet trial's export on our busy 2-core machine,
where reading them back takes under 1 s."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ab.nn.deploy.inputs import Sample


@dataclass
class Reference:
    """PyTorch's ages and the labels, per split: what every artifact is compared with."""

    labels: dict[str, np.ndarray]
    ages: dict[str, np.ndarray]


def from_recorded(recorded: dict, splits: dict[str, object], labels: dict[str, np.ndarray],
                  data_key: str | None) -> tuple[Reference | None, str]:
    """The reference from ``recorded`` (``StatStore.recorded_predictions``) for the datasets ``splits`` with
    the ``labels`` just read from them, or ``None`` and why it cannot stand for a PyTorch pass over them now.
    It stands only where it is the same computation: a CPU trial (a GPU's kernels give other ages than the
    CPU that runs the export), on the same data key, with every split's rows in the datasets' order (the
    same image ids, where the loader states them, and the same labels), every prediction finite. It can
    differ from a pass now by the float rounding of another batch size or thread count (about 1e-6 years).
    A split measured on a fidelity ``Sample`` (``ab.nn.deploy.inputs.sample``) is compared with the recorded
    rows at its positions."""
    if recorded.get("device") != "cpu":
        return None, f"the trial ran on {recorded.get('device') or 'an unrecorded device'}, not the CPU"
    if data_key is None or recorded.get("data_key") != data_key:
        return None, f"the trial's data key {recorded.get('data_key')} is not the export's {data_key}"
    stored = recorded.get("splits") or {}
    if set(stored) != set(splits):
        return None, f"predictions recorded for {sorted(stored) or 'no split'}, the export measures {sorted(splits)}"
    ages = {}
    for split, dataset in splits.items():
        rows, count = stored[split], len(labels[split])
        sampled = isinstance(dataset, Sample)
        chosen = dataset.positions if sampled else np.arange(count)
        whole = len(dataset.dataset) if sampled else count
        if len(rows["predicted"]) != whole or len(chosen) != count:
            return None, f"{split}: {len(rows['predicted'])} recorded predictions for {whole} images"
        ids = getattr(dataset, "image_ids", None)
        ids = list(ids) if ids is not None and len(ids) == count else [None] * count
        if [rows["image_ids"][i] for i in chosen] != ids:
            return None, f"{split}: the recorded image ids are not the images measured, in their order"
        if not np.array_equal(np.asarray(rows["ages"], dtype=np.float32)[chosen], labels[split]):
            return None, f"{split}: the recorded labels are not the images' labels"
        predicted = [rows["predicted"][i] for i in chosen]
        if any(value is None for value in predicted):
            return None, f"{split}: a recorded prediction is not finite"
        ages[split] = np.asarray(predicted, dtype=np.float32)
    return Reference(dict(labels), ages), "the trial's recorded predictions"
