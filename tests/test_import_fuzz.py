"""A fuzz pass over JSON import: thousands of generated records in generated trees (LEMUR's layouts, our
mirror's records, trial lists and code files, with hostile names, ids, types, NUL bytes, huge numbers and
files that are not JSON at all). Every import either succeeds, and then adds nothing the second time, or
is refused with one of the documented errors (``BadRecord``, ``ScaleError``) in one line; nothing else
may escape."""
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ab.nn import registry
from ab.nn.stat import json_import, untrusted, versions
from ab.nn.stat.accuracy_scale import ScaleError
from ab.nn.stat.untrusted import BadRecord

CONFIGS = ["age-regression_utkface_mae_MobileAgeNet", "img-classification_cifar-10_acc_Net",
           "age-regression_utkface_mae_rag-ebd02dde"]
CODE = "class Net:\n    pass\n"
CODE_ID = registry.checksum(CODE)
HOSTILE = ["../x", "/etc/passwd", "a\x00b", "x" * 300, "", "Net\n", "norm_64", "a b", "..", "ok_name", "Mobile.AgeNet"]

text = st.text(st.characters(blacklist_characters="\x00"), max_size=12)  # NUL comes with HOSTILE names
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    text, inner, max_size=3), max_leaves=6)

names = st.sampled_from(HOSTILE) | st.text(max_size=10)


def either(good, bad=values, one_in: int = 40):
    """Mostly ``good``, one time in ``one_in`` anything at all: most records get deep into the import, and
    every check still meets bad input (``sampled_from`` draws its index evenly, ``one_of`` does not)."""
    return st.sampled_from(range(one_in)).flatmap(lambda draw: bad if draw == one_in // 2 else good)


code_ids = either(st.sampled_from([CODE_ID, None, "0" * 32]), st.sampled_from(["../../x", "A" * 32]) | values)
accuracies = either(st.floats(min_value=0, max_value=1))
transforms = either(st.sampled_from(["norm_64", "norm_128_flip", None, ""]), names)
train_stat = st.dictionaries(st.sampled_from(["train_loss", "lr", "cpu_count", "truncated", "gpu_type", "epoch_max",
                                              "total_ram_kb", "x"]), values, max_size=4)
hexes = st.uuids().map(lambda u: u.hex)
ours = st.fixed_dictionaries({"stat_id": either(hexes | st.sampled_from(["s1", "s2"]))}, optional={
    "trial_id": either(st.integers(min_value=0, max_value=5)),
    "metrics": either(st.dictionaries(either(st.sampled_from(["eval", "test"]), st.just("much-too-long-split")),
                                      either(st.dictionaries(text, either(st.floats() | st.none()), max_size=3)),
                                      max_size=2)),
    "mae": either(st.floats()), "accuracy_scale": either(st.sampled_from([15.0, 20.0, None])),
    "code": either(st.fixed_dictionaries({}, optional={"nn": code_ids, "transform": code_ids, "metric": code_ids})),
    "lemur": either(st.fixed_dictionaries({}, optional={"record": values, "train_stat": values}))})
record = st.fixed_dictionaries({"accuracy": accuracies}, optional={
    "duration": either(st.integers(min_value=0, max_value=10 ** 13)),
    "uid": either(st.sampled_from(["u1", "u2", "u3"])), "transform": transforms,
    "test_mae": either(st.floats(min_value=0, max_value=30)), "metric_mae": accuracies,
    "lr": scalars, "batch": scalars, "epoch_max": scalars, "cpu_type": scalars, "train_stat": either(train_stat),
    "ab_nn": either(ours)}).flatmap(lambda r: st.dictionaries(text, values, max_size=2).map(
        lambda extra: {**extra, **r}))
trial = st.fixed_dictionaries({
    "id": either(st.integers(min_value=0, max_value=5)), "uid": either(hexes | st.sampled_from(["t1", "t2"])),
    "config": either(st.just(CONFIGS[0]), names), "task": st.just("age-regression"),
    "dataset": st.just("utkface"), "metric": st.just("mae"), "nn": either(st.just("MobileAgeNet"), names),
    "study": either(st.just("s@k/e1")), "epoch_max": either(st.integers(1, 5)),
    "status": either(st.sampled_from(["complete", "running", "failed"]), st.just("zombie") | values)}, optional={
    "replica_of": either(st.integers(min_value=0, max_value=5)), "transform": transforms,
    "started_at": either(st.just("2026-12-06T10:00:00"), st.text(max_size=8) | values), "nn_code_id": code_ids,
    "prm": either(st.just("p1")), "prm_values": either(st.dictionaries(text, scalars, max_size=2)),
    "eval_mae": either(st.floats() | st.none()), "seed": either(st.integers(0, 2 ** 31 - 1)),
    "epochs_done": either(st.integers(0, 5) | st.none()), "lease_id": either(st.integers(0, 5)),
    "number": either(st.integers(0, 5)), "optuna_trial_id": either(st.integers(0, 5)),
    "params": either(st.integers(0, 2 ** 63 - 1))})


def document(items):
    return st.lists(items, min_size=1, max_size=6).map(json.dumps)


epoch_files = st.tuples(st.sampled_from(CONFIGS), st.sampled_from(["1", "2", "10"]), document(record))
trial_files = st.tuples(st.sampled_from(CONFIGS), document(trial))
code_files = st.tuples(st.sampled_from(["nn", "metric", "transform"]), st.sampled_from([CODE_ID, "0" * 32]), either(
    st.fixed_dictionaries({"kind": st.just("nn"), "id": st.just(CODE_ID), "name": either(st.just("MobileAgeNet"), names),
                           "code": either(st.just(CODE), text)})).map(json.dumps))
FAST = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@settings(FAST, max_examples=1000)
@given(name=names | st.text(max_size=300) | st.sampled_from(CONFIGS).map(lambda c: c + "\n"))
def test_any_name_is_a_valid_name_or_a_one_line_bad_record(name):
    for check in (lambda: untrusted.config(name, "here"), lambda: untrusted.name(registry.MODEL, name, "here"),
                  lambda: untrusted.code_id(name, "here")):
        try:
            accepted = check()
        except BadRecord as error:
            assert error.where == "here" and "\n" not in str(error)
            continue
        assert accepted is None or "/" not in str(accepted) and "\x00" not in str(accepted) \
            and len(str(accepted).encode()) <= untrusted.MAX_COMPONENT and str(accepted).isprintable()


@settings(FAST, max_examples=500)
@given(text=st.text(max_size=60) | values.map(json.dumps) | document(record).map(lambda t: t[:-3]),
       name=st.sampled_from(["1.json", "x.json", "99999999999.json", "1.txt", "01.json"]))
def test_any_file_is_records_or_a_one_line_bad_record(tmp_path_factory, text, name):
    folder = tmp_path_factory.mktemp("doc") / CONFIGS[0]
    folder.mkdir()
    (folder / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        for _, path in json_import.epoch_files(folder):
            records = json_import.read_records(path)
            assert isinstance(records, list) and all(isinstance(r, dict) for r in records)
    except BadRecord as error:
        assert error.where == str(folder / name) and "\n" not in str(error)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    """One database for every example: imports accumulate, as they do in a user's database (made current
    first, as ``import-json`` does)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    versions.upgrade(url)
    return url


def _write(root: Path, epochs, trials, codes) -> Path:
    tree = root / "stat" / "train"
    tree.mkdir(parents=True)
    for folder, stem, text in epochs:
        path = tree / folder / f"{stem}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for name, text in trials:
        path = root / "stat" / "trial" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for kind, code_id, text in codes:
        path = root / "stat" / "code" / kind / f"{code_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tree


@settings(FAST, max_examples=400)
@given(epochs=st.lists(epoch_files, min_size=1, max_size=3), trials=st.lists(trial_files, max_size=1),
       codes=st.lists(code_files, max_size=2), scale=either(st.sampled_from([15.0, 20.0]), st.sampled_from([None, -1.0]), 8))
def test_generated_trees_import_or_are_refused_with_a_documented_error(database, epochs, trials, codes, scale):
    with tempfile.TemporaryDirectory() as folder:
        try:
            tree = _write(Path(folder), epochs, trials, codes)
        except (OSError, UnicodeError):
            return  # a name this file system cannot hold is nothing an import will ever read
        try:
            first = json_import.import_tree(database, tree, progress=False, lemur_mae_scale=scale)
        except (BadRecord, ScaleError) as error:
            assert "\n" not in str(error) and "\r" not in str(error)
            event(f"refused: {type(error).__name__} {getattr(error, 'problem', str(error))[:25]}")
            return
        event(f"imported {min(first.records, 3)}+ records, {min(first.trials, 2)}+ trials")
        again = json_import.import_tree(database, tree, progress=False, lemur_mae_scale=scale)
        assert (again.records, again.trials) == (0, 0), first
