"""Who the models fail: gender and race labels carried with every image, group numbers with intervals
(ab.nn.stat.groups), age standardisation, minors' false-adult rates, and the sweep's --max-group-gap."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import ParquetSource
from ab.nn.dataset.utkface import attributes
from ab.nn.stat import engine as engines, groups
from ab.nn.stat.schema import ImageAttribute
from ab.nn.sweep.search import Search, SearchError
from tests import helpers

RACES = np.array(attributes.RACES, dtype=object)


# -- labels: parsed, unknown where missing or malformed, stored, counted --------------------------
@pytest.mark.parametrize("name, gender, race, why", [
    ("25_1_3_20170116174525125.jpg.chip.jpg", "female", "Indian", "file name"),
    ("24_0_1_20170116220224657 .jpg.chip.jpg", "male", "Black", "file name"),  # the real set's stray space
    ("55_0_0_20170116232725357jpg.chip.jpg", "male", "White", "file name"),    # and its missing dot
    ("39_1_20170116174525125.jpg.chip.jpg", "female", "unknown", "file name has no race"),
    ("39_7_2_20170116174525125.jpg.chip.jpg", "unknown", "unknown", "file name: bad gender field"),
    ("39_1_9_20170116174525125.jpg.chip.jpg", "unknown", "unknown", "file name: bad race field"),
])
def test_labels_from_file_names(name, gender, race, why):
    found = attributes.from_name(name, 39)
    assert (found.gender, found.race) == (gender, race)
    assert why in (found.race_from if race == "unknown" else found.gender_from)


@pytest.mark.parametrize("columns, gender, race, why", [
    ({"gender": "Female", "ethnicity": "Asian"}, "female", "Asian", "parquet column 'ethnicity'"),
    ({"gender": 0, "race": 4}, "male", "Others", "parquet column 'race'"),
    ({"gender": "1", "race": 1.0}, "female", "Black", "parquet column 'race'"),
    ({"gender": "male"}, "male", "unknown", "parquet has no race column"),
    ({"gender": None, "ethnicity": "Latino"}, "unknown", "unknown", "unrecognised value 'Latino'"),
])
def test_labels_from_parquet_columns(columns, gender, race, why):
    found = attributes.from_columns(30, columns)
    assert (found.gender, found.race) == (gender, race)
    assert why in found.race_from


def test_parquet_rows_carry_their_label_columns_into_the_catalog(tmp_path):
    images = helpers.make_utkface(tmp_path / "src", count=6)
    paths = sorted((tmp_path / "src").iterdir())
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "age": images,
                      "gender": ["Male", "Female", None, "Female", "Male", "Female"],
                      "ethnicity": ["White", "Black", "Asian", "Martian", "Indian", "Others"]})
    (tmp_path / "hf").mkdir()
    pq.write_table(table, tmp_path / "hf" / "train-00000-of-00001.parquet")
    source = utkface.find_source(tmp_path / "hf")
    assert isinstance(source, ParquetSource)
    cat = utkface.catalog(source, tmp_path / "cache", progress=False)
    found = sorted((a.age, a.gender, a.race) for a in cat.attributes)
    assert found == sorted(zip(map(float, images), ["male", "female", "unknown", "female", "male", "female"],
                               ["White", "Black", "Asian", "unknown", "Indian", "Others"]))
    # the same images as a folder: same content ids, labels read from the names instead
    by_id = utkface.labels(tmp_path / "src", tmp_path / "cache2", DataSettings(progress=False))
    assert set(by_id) == set(cat.ids)


def _store_trial(store, split_predictions: dict, labels, dataset="utkface") -> int:
    from ab.nn.config import Config

    config = Config.parse("age-regression_utkface_mae_TinyAge")
    trial_id = store.reserve_trial(config, 1, None, data_key="k")
    for split, (ages, predicted, ids) in split_predictions.items():
        store.record_predictions(trial_id, split, ages, predicted, ids)
    store.record_attributes(dataset, labels)
    return trial_id


def _labels(n, race, gender, ages):
    read = ("file name",) * 3
    return [(f"img{i}", attributes.Attributes(float(ages[i]), gender[i], race[i], *read)) for i in range(n)]


def test_labels_are_stored_once_counted_and_read_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    ages = np.array([5, 15, 25, 35, 45, 55], dtype=float)
    race = ["White", "Black", "unknown", "White", "Asian", "Black"]
    gender = ["male", "female", "female", "unknown", "male", "female"]
    labels = _labels(5, race, gender, ages)  # the sixth image has no row: not recorded
    ids = [f"img{i}" for i in range(6)]
    trial = _store_trial(store, {"test": (ages, ages + 1, ids)}, labels)
    assert store.record_attributes("utkface", labels) == 5  # again: the rows stay as they are
    with engines.engine(url, writer=False).connect() as connection:
        assert connection.execute(select(ImageAttribute)).all().__len__() == 5
        judged = groups.load(connection, [trial], "test")
    assert judged.unrecorded == 1
    assert list(judged.labels["race"]) == race[:5] + ["unknown"]
    frame = groups.summarise(judged, by="race", min_group=1, resamples=50)
    n = frame[frame.metric == "mae"].set_index("group").n
    assert n.to_dict() == {"White": 2, "Black": 1, "Asian": 1, "unknown": 2, "all": 6, "gap": 3}

    from ab.nn import api

    table = api.attributes(trial_id=trial, split="test", db=url)
    assert list(table.race) == race[:5] + ["unknown"]
    assert list(table.race_from) == ["file name"] * 5 + ["not recorded"]

    from ab.nn.stat import versions
    from ab.nn.stat.copy import copy_database

    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    versions.upgrade(copy)  # as `python -m ab.nn.stat copy` does to its target
    assert copy_database(url, copy)["image_attribute"] == 5
    assert api.attributes(trial_id=1, split="test", db=copy).race.tolist() == table.race.tolist()


# -- group numbers against NumPy, written out ------------------------------------------------------
def _judged(n=3000, seed=0, replicas=1):
    rng = np.random.default_rng(seed)
    ages = rng.integers(1, 90, n).astype(float)
    race = RACES[rng.integers(0, 5, n)]
    gender = np.array(["male", "female"])[rng.integers(0, 2, n)]
    race[:7] = "unknown"
    offset = np.where(race == "Asian", -2.0, 0.0) + np.where(gender == "female", 1.0, 0.0)
    predicted = ages + offset + rng.normal(0, 6, (replicas, n))
    return groups.Judged(ages, predicted, {"race": race, "gender": gender})


def _value(frame, group, metric):
    return frame[(frame.group == group) & (frame.metric == metric)].iloc[0]


def test_group_numbers_match_a_numpy_computation():
    judged = _judged()
    frame = groups.summarise(judged, by="race", resamples=200)
    ages, predicted, race = judged.ages, judged.predicted[0], judged.labels["race"]
    bins = [(0, 3), (3, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 70), (70, 1000)]
    share = np.array([((ages >= lo) & (ages < hi)).mean() for lo, hi in bins])
    for name in list(attributes.RACES) + ["unknown"]:
        member = race == name
        error = predicted[member] - ages[member]
        assert _value(frame, name, "mae").value == pytest.approx(np.abs(error).mean())
        assert _value(frame, name, "bias").value == pytest.approx(error.mean())
        assert _value(frame, name, "cs5").value == pytest.approx((np.abs(error) <= 5).mean())
        assert _value(frame, name, "mae").n == member.sum()
        for t in (13, 18, 21):
            minors, adults = member & (ages < t), member & (ages >= t)
            assert _value(frame, name, f"false_adult@{t}").value == pytest.approx((predicted[minors] >= t).mean())
            assert _value(frame, name, f"false_adult@{t}").n == minors.sum()
            assert _value(frame, name, f"false_minor@{t}").value == pytest.approx((predicted[adults] < t).mean())
        if name != "unknown":  # every race has >= 5 images in every bin here: all bins are used
            by_bin = [np.abs(predicted - ages)[member & (ages >= lo) & (ages < hi)].mean() for lo, hi in bins]
            assert _value(frame, name, "std_mae").value == pytest.approx(float(np.dot(share, by_bin)))
    known = [np.abs(predicted - ages)[race == r].mean() for r in attributes.RACES]
    gap = _value(frame, "gap", "mae")
    assert gap.value == pytest.approx(max(known) - min(known))
    assert gap.highest == attributes.RACES[int(np.argmax(known))]
    assert gap.lowest == attributes.RACES[int(np.argmin(known))]
    assert gap.n == 5  # the unknown race is counted, never in a gap
    assert frame.attrs["standard_bins"] == [b[0] for b in groups.AGE_BINS] and frame.attrs["coverage"] == 1.0
    defined = frame[frame.value.notna()]  # a rate of the 7 unknown images may have no minors
    assert (defined.low <= defined.value + 1e-12).all() and (defined.value <= defined.high + 1e-12).all()


def test_combined_groups_and_replicas():
    judged = _judged(replicas=3)
    frame = groups.summarise(judged, by=("race", "gender"), resamples=100)
    member = (judged.labels["race"] == "White") & (judged.labels["gender"] == "female")
    expected = np.abs(judged.predicted[:, member] - judged.ages[member]).mean()  # mean over replicas and images
    row = _value(frame, "White / female", "mae")
    assert row.value == pytest.approx(expected) and (row.race, row.gender) == ("White", "female")
    assert frame.attrs["replicas"] == 3
    with pytest.raises(ValueError, match="by= takes"):
        groups.summarise(judged, by="colour")


def test_age_standardisation_removes_a_gap_that_is_only_an_age_difference():
    """Both races hold every age of each bin evenly, but Black faces are mostly young and White faces
    mostly old; the error depends on the age alone (10 % of it), so all of the raw gap is age."""
    ages, race = [], []
    for index, (_, lo, hi) in enumerate(groups.AGE_BINS):
        years = np.arange(lo, min(hi, 90))
        for name, copies in (("Black", 2 * (len(groups.AGE_BINS) - index)), ("White", 2 * (index + 1))):
            ages += list(np.repeat(years, copies))
            race += [name] * (len(years) * copies)
    ages = np.asarray(ages, dtype=float)
    predicted = ages + 0.1 * ages
    frame = groups.summarise(groups.Judged(ages, predicted, {"race": race}), by="race", resamples=100)
    raw = _value(frame, "gap", "mae").value
    standardised = _value(frame, "gap", "std_mae").value
    assert raw > 1.0  # the groups have different ages, so their raw MAEs differ
    assert standardised == pytest.approx(0.0, abs=1e-9)


def test_false_adult_and_false_minor_rates_on_constructed_predictions():
    ages = np.array([8, 12, 12, 15, 16, 17, 17, 20, 30, 40], dtype=float)
    predicted = np.array([9, 14, 11, 19, 17, 18, 25, 17, 29, 50], dtype=float)
    frame = groups.summarise(groups.Judged(ages, predicted, {}), by="gender", min_group=1, resamples=50)
    everyone = frame[frame.group == "all"].set_index("metric")
    # under 18: ages 8 12 12 15 16 17 17 -> predicted >= 18: 19 18 25 -> 3 of 7
    assert everyone.value["false_adult@18"] == pytest.approx(3 / 7) and everyone.n["false_adult@18"] == 7
    # 18 or older: 20 30 40 -> predicted < 18: 17 -> 1 of 3
    assert everyone.value["false_minor@18"] == pytest.approx(1 / 3) and everyone.n["false_minor@18"] == 3
    # under 13: 8 12 12 -> predicted >= 13: 14 -> 1 of 3; 13 or older predicted < 13: none of 7
    assert everyone.value["false_adult@13"] == pytest.approx(1 / 3)
    assert everyone.value["false_minor@13"] == 0.0
    # under 21: 8 of them, predicted >= 21: 25 -> 1 of 8; 21 or older (30 40) predicted < 21: none
    assert everyone.value["false_adult@21"] == pytest.approx(1 / 8)
    assert everyone.value["false_minor@21"] == 0.0
    assert (frame[frame.group == "all"].metric == "std_mae").any()


def test_intervals_cover_the_truth_in_a_simulation():
    """200 images per race x 5 races drawn from a known model, 60 times: the 95 % intervals of a group's
    MAE, of a false-adult rate and of the race gap must hold the true value about 95 % of the time."""
    rng = np.random.default_rng(7)
    scale = {"White": 4.0, "Black": 4.0, "Asian": 4.0, "Indian": 4.0, "Others": 5.0}  # true gap: 1 year
    hits = {"mae": 0, "rate": 0, "gap": 0}
    runs = 60
    for run in range(runs):
        race = np.repeat(RACES, 200)
        ages = rng.uniform(1, 60, race.size)
        error = rng.exponential(np.vectorize(scale.get)(race)) * rng.choice([-1, 1], race.size)
        judged = groups.Judged(ages, ages + error, {"race": race})
        frame = groups.summarise(judged, by="race", resamples=300, seed=run)
        white = _value(frame, "White", "mae")
        hits["mae"] += white.low <= 4.0 <= white.high
        # P(predicted >= 18 | age < 18) for exponential errors of scale 4, ages uniform on [1, 18)
        rate = _value(frame, "White", "false_adult@18")
        truth = np.mean([0.5 * np.exp(-(18 - a) / 4.0) for a in np.linspace(1, 18, 10001)[:-1]])
        hits["rate"] += rate.low <= truth <= rate.high
        gap = _value(frame, "gap", "mae")
        hits["gap"] += gap.low <= 1.0 <= gap.high
    assert all(count >= 0.85 * runs for count in hits.values()), hits


def test_paired_comparison_on_groups():
    judged = _judged(n=2000)
    same = groups.compare(judged, judged, by="race", resamples=100)
    defined = same[same.a.notna()]
    assert (defined.difference == 0).all() and set(defined.verdict) == {"tie"}
    worse = groups.Judged(judged.ages, judged.ages + 2 * (judged.predicted - judged.ages), judged.labels)
    frame = groups.compare(judged, worse, by="race", resamples=200)
    mae = frame[frame.metric == "mae"].set_index("group")
    assert (mae.loc[list(attributes.RACES), "verdict"] == "A lower").all() and (mae.difference < 0).all()
    with pytest.raises(ValueError, match="same images"):
        groups.compare(judged, _judged(n=1999), by="race")


def test_validation_gap_uses_the_validation_part_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    rng = np.random.default_rng(0)
    n = 600
    ages = rng.integers(20, 60, n).astype(float)
    race = RACES[np.arange(n) % 5]
    ids = [f"img{i}" for i in range(n)]
    fair = ages + 3.0
    unfair = fair + np.where(race == "Black", 4.0, 0.0)  # Black faces 4 years worse, on the test part only
    trial = _store_trial(store, {"eval": (ages, fair, ids), "test": (ages, unfair, ids)},
                         _labels(n, race, ["male"] * n, ages))
    with engines.engine(url, writer=False).connect() as connection:
        gaps = groups.validation_gaps(connection, [trial, trial + 1])
        test_gap = groups.gap(groups.load(connection, [trial], "test"))
    assert gaps[trial] == pytest.approx(0.0, abs=1e-9) and gaps[trial + 1] is None
    assert test_gap == pytest.approx(4.0)


def test_max_group_gap_flag_is_parsed_and_checked(tmp_path, capsys):
    from ab.nn import train

    args = train.parser().parse_args(["--max-group-gap", "1.5", "--group-gap-by", "race,gender"])
    search = train.options_from(args).search
    assert (search.max_group_gap, search.group_gap_by) == (1.5, ("race", "gender"))
    assert search.gap_constraint == (1.5, ("race", "gender"))
    with pytest.raises(SearchError, match="must be positive"):
        Search.parse(max_group_gap=0)
    with pytest.raises(SearchError, match="--group-gap-by takes"):
        Search.parse(max_group_gap=1, group_gap_by="hair")
    assert Search.parse().max_group_gap is None and Search.parse().gap_constraint == (None, None)
    with pytest.raises(SystemExit) as exited:
        train.cli(["--root", str(tmp_path), "-c", "age-regression_utkface_mae_MobileAgeNet", "--max-group-gap", "-2"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m ab.nn.train: error: --max-group-gap is a gap in years and must be positive, got -2.0"]


def test_a_gap_limit_makes_trials_over_it_or_without_a_gap_infeasible_in_the_ranking_and_in_optuna(tmp_path):
    """The ranking and Optuna's copy read the limit from our study table and each trial's recorded
    validation gap: a trial over it, or whose gap is unknown, is infeasible whatever its MAE."""
    import dataclasses

    from sqlalchemy.orm import Session

    from ab.nn import registry
    from ab.nn.config import Config
    from ab.nn.stat import ranking, studies
    from ab.nn.stat.schema import Trial

    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    config = Config.parse("age-regression_utkface_mae_TinyAge")
    store.save_code(registry.MODEL, config.nn, "class Net: pass\n")
    store.save_code(registry.METRIC, config.metric, "def create_metric(out_shape): pass\n")
    definition = studies.StudyDef("gap study", config.name, "k", 1, ("mae",), None, 1.0, ("race",))
    with store.transaction() as session:
        studies.define(session, definition)
    made = studies.open_study(studies.storage(url), definition)
    ids = {}
    for gap, mae in ((0.5, 6.0), (3.0, 4.0), (None, 3.0)):
        trial_id = store.reserve_trial(config, 1, None, data_key="k", study=definition.name)
        store.record_epoch(trial_id, 1, accuracy=1 - mae / 20, duration=1, metrics={"mae": mae},
                           train_stat={"epoch_max": 1})
        assert store.finish_trial(trial_id, "complete", eval_group_gap=gap)
        ids[gap] = trial_id
    with Session(engines.engine(url, writer=False)) as session:
        ranked = ranking.rank(session, config.name, "k")
        constraints = {}
        for gap, trial_id in ids.items():
            optuna_id, _ = studies.add(session, made, session.get(Trial, trial_id), definition)
            constraints[gap] = made._storage.get_trial(optuna_id).constraints
    assert [(r.trial_id, r.feasible) for r in ranked] == [(ids[0.5], True), (ids[None], False), (ids[3.0], False)]
    assert constraints == {0.5: {"group_gap_years": -0.5}, 3.0: {"group_gap_years": 2.0}, None: {}}
    with pytest.raises(studies.StudyMismatch, match="created with --max-group-gap 1 --group-gap-by race; this run "
                                                    "asks for --max-group-gap 1 --group-gap-by race,gender"):
        with store.transaction() as session:
            studies.define(session, dataclasses.replace(definition, group_gap_by=("race", "gender")))


@pytest.mark.slow
def test_a_sweep_under_a_gap_limit_records_each_trials_validation_gap_and_ranks_it_infeasible_over_it(
        root, tmp_path, tiny_model, capsys):
    """Black faces at the far ends of their age bins, White ones near 40: a tiny model that has learned
    little answers about 40 years for every face, so it is about 10 years worse on the Black faces,
    age-standardised. kfold with 3 folds puts 40 images of each race in the validation part."""
    import optuna

    from ab.nn import api
    from tests.test_sweep_cli import run

    data = tmp_path / "utk" / "UTKFace"
    data.mkdir(parents=True)
    index = 0
    for white, black in ((29, 20), (39, 30), (41, 49), (50, 69)):
        for _ in range(30):
            for race, age in ((0, white), (1, black)):
                helpers.make_face(age, 32, index).save(data / helpers.utk_name(age, 0, race, index), quality=90)
                index += 1
    config = f"age-regression_utkface_mae_{tiny_model}"
    sweep = ["-c", config, "-t", "1", "--split", "kfold", "--folds", "3"]
    assert run(root, data.parent, *sweep, "--max-group-gap", "1", "--group-gap-by", "race") == 0
    assert "best: trial" not in capsys.readouterr().out  # no trial within the limit: none is named best
    db = root / "db" / "ab.nn.db"
    trial = api.ranked_trials(db=db).iloc[0]
    with engines.engine(f"sqlite:///{db}", writer=False).connect() as connection:
        validation = groups.validation_gaps(connection, [trial.id], "race")[trial.id]
        test = groups.gap(groups.load(connection, [trial.id], "test"), "race")
    assert trial.eval_group_gap == pytest.approx(validation) and trial.eval_group_gap > 5
    assert abs(test - validation) > 1e-6  # what was recorded is the validation part's, not the test part's
    assert not trial.feasible
    study = optuna.load_study(study_name=trial.study, storage=f"sqlite:///{db}")
    assert study.trials[0].constraints == {"group_gap_years": pytest.approx(trial.eval_group_gap - 1)}
    with pytest.raises(ValueError):
        study.best_trial  # Optuna names no infeasible trial best either
    with pytest.raises(SystemExit):  # the study keeps its limit: another one is refused, in one line
        run(root, data.parent, *sweep, "--max-group-gap", "20")
    assert "was created with --max-group-gap 1 --group-gap-by race; this run asks for --max-group-gap 20 " \
           "--group-gap-by race" in capsys.readouterr().err


# -- end to end: a sweep stores its images' labels; older trials are backfilled --------------------
@pytest.mark.slow
def test_a_trial_stores_its_images_labels_and_a_backfill_restores_them(root, utk_dir, tiny_model, capsys):
    from ab.nn import api
    from ab.nn.stat import __main__ as stat_cli
    from tests.test_sweep_cli import run

    for path in sorted((utk_dir / "UTKFace").iterdir())[::5]:  # names without their race field
        age, gender, _, rest = path.name.split("_", 3)
        path.rename(path.with_name(f"{age}_{gender}_{rest}"))
    assert run(root, utk_dir, "-c", f"age-regression_utkface_mae_{tiny_model}", "-t", "1") == 0
    db = root / "db" / "ab.nn.db"
    table = api.attributes(trial_id=1, db=db)
    assert set(table.split) == {"eval", "test"} and (table.race_from != "not recorded").all()
    expected = {}
    for path in (utk_dir / "UTKFace").iterdir():
        found = attributes.from_name(path.name, 0)
        expected[(int(path.name.split("_")[0]), found.gender, found.race)] = True
    assert all((int(r.age), r.gender, r.race) in expected for r in table.itertuples())
    unknown = table[table.race == "unknown"]
    assert len(unknown) > 0 and (unknown.race_from == "file name has no race").all()
    frame = api.groups(1, by="race", split="eval", min_group=1, db=db)
    mae = frame[frame.metric == "mae"].set_index("group")
    assert mae.n["all"] == len(table[table.split == "eval"])
    assert mae.n["unknown"] == len(unknown[unknown.split == "eval"])  # counted, never in a gap

    url = f"sqlite:///{db}"
    with engines.engine(url).begin() as connection:  # as a trial recorded before labels were stored
        connection.execute(ImageAttribute.__table__.delete())
    assert api.attributes(trial_id=1, db=db).race_from.eq("not recorded").all()
    assert stat_cli.cli(["attributes", "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    out = capsys.readouterr().out
    assert "| utkface |" in out and f"| {len(unknown)} |" in out  # how many of them have no race
    restored = api.attributes(trial_id=1, db=db)
    assert restored[["gender", "race"]].equals(table[["gender", "race"]])
    assert stat_cli.cli(["groups", "--trial", "1", "--by", "gender", "--split", "eval", "--root", str(root)]) == 0
    assert "false_adult@18" in capsys.readouterr().out


@pytest.mark.slow
def test_report_figures_have_a_panel_per_grouping_and_a_point_per_model(root, utk_dir, tiny_model):
    import matplotlib.pyplot as plt

    from ab.nn.report import groups as report_groups, plots
    from tests.test_sweep_cli import CONFIG, run

    for config, fixed in ((CONFIG, ["-p", '{"head": "regression"}']), (f"age-regression_utkface_mae_{tiny_model}", [])):
        assert run(root, utk_dir, "-c", config, "-t", "1", *fixed) == 0
    from ab.nn import api

    db = str(root / "db" / "ab.nn.db")
    key = api.trials(db=db).data_key.iloc[0]
    collected = report_groups.collect(db, key, api.trials(db=db).iloc[:0])
    entries = collected.entries
    assert [e.label for e in entries] == [e.label for e in collected.labelled] and len(entries) == 2

    panels = [("gender", "mae", "MAE by gender", "MAE"), ("race", "mae", "MAE by race", "MAE"),
              ("gender", "std_mae", "std by gender", "MAE"), ("race", "std_mae", "std by race", "MAE")]
    figure = plots.group_errors_figure(entries, panels, "who", columns=2)
    for ax, (by, metric, *_) in zip(figure.axes, panels):
        shown = {label.get_text().split("\n")[0] for label in ax.get_xticklabels()}
        frame = entries[0].frames[by]
        assert shown == set(frame[(frame.metric == metric) & frame.value.notna()].group) - {"all", "gap"}
        if not shown:  # 12 test images: no group is big enough to be age-standardised, and the panel says so
            assert metric == "std_mae" and [t.get_text() for t in ax.texts] == [plots.NO_GROUPS]
            continue
        assert len(ax.containers) == len(entries)  # one error-bar series per model: none left out
        assert all("n=" in label.get_text() for label in ax.get_xticklabels())
        offsets = [c.lines[0].get_xdata()[0] for c in ax.containers]
        assert len(set(offsets)) == len(entries)  # dodged: no model drawn over another
    plt.close(figure)

    figure = plots.predicted_vs_true_figure(entries)
    panels_drawn = [ax for ax in figure.axes if ax.get_xlabel() == "true age (years)"]
    assert len(panels_drawn) == len(entries)
    for ax in panels_drawn:
        lines = [line.get_xdata() for line in ax.get_lines()] + [line.get_ydata() for line in ax.get_lines()]
        assert any(np.all(np.asarray(values) == 18) for values in lines)  # the 18-year lines are marked
        assert "under 18, predicted 18+" in " ".join(t.get_text() for t in ax.texts)
    plt.close(figure)

    figure = plots.minors_figure(entries)
    assert len(figure.axes) == 2
    for ax in figure.axes:
        ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
        assert ticks == ["T = 13 years", "T = 18 years", "T = 21 years"]
        assert len(ax.containers) == len(entries)
    plt.close(figure)
