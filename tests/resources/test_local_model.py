"""The local model predicts from its linear form exactly what scikit-learn's pipeline would, in a
process that never imports scikit-learn; any other pipeline, or a form left from another
version, falls back to the pipeline."""

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from orchestration.decision.confidence import Calibrator, IsotonicMap
from resources.local_model import LocalModel

REPO = Path(__file__).resolve().parents[2]


def examples(labels: tuple[str, ...], n: int = 300, seed: int = 1) -> tuple[list[dict], list[str]]:
    """Records shaped as workflows give them: floats, bools, one-hot strings; labels that
    depend on them, with noise."""
    rng = random.Random(seed)
    records, y = [], []
    for _ in range(n):
        amount, known = rng.uniform(0, 5), rng.random() < 0.8
        tier = rng.choice(["low", "medium", "high"])
        records.append({"log_amount": amount, "vendor_known": known, "risk": tier, f"flag={rng.randint(0, 2)}": 1.0})
        score = amount - 2.5 + (1.5 if tier == "high" else 0) - (2 if not known else 0) + rng.gauss(0, 0.7)
        y.append(labels[min(len(labels) - 1, max(0, int(score + len(labels) / 2)))])
    return records, y


def pipeline_proba(model: LocalModel, name: str, records: list[dict]) -> np.ndarray:
    return joblib.load(model._path(name)).predict_proba(records)


@pytest.mark.parametrize("labels", [("approve", "reject"), ("approve", "hold", "reject")], ids=["two", "three"])
def test_the_linear_form_predicts_what_the_pipeline_does(tmp_path, labels):
    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(labels)
    version = model.fit("m", records, y)
    assert (tmp_path / "m.linear.npz").exists()
    # Unseen records, one with a feature and a category the fit never saw.
    fresh, _ = examples(labels, n=200, seed=2)
    fresh.append({"log_amount": 9.0, "risk": "unheard-of", "new_feature": 3.0})
    got = model.predict("m", fresh)
    np.testing.assert_allclose(got.probabilities, pipeline_proba(model, "m", fresh), rtol=0, atol=1e-12)
    assert got.classes == sorted(labels) and got.model_version == version
    assert got.labels == [got.classes[i] for i in pipeline_proba(model, "m", fresh).argmax(axis=1)]
    assert model.predict("m", []).probabilities.shape == (0, len(labels))


_PREDICT_IN_A_FRESH_PROCESS = """
import json, sys
from resources.local_model import LocalModel
got = LocalModel(model_dir=sys.argv[1]).predict("m", json.loads(sys.argv[2]))
print(json.dumps({"labels": got.labels, "sklearn": "sklearn" in sys.modules, "scipy": "scipy" in sys.modules}))
"""


def test_a_process_that_only_predicts_never_imports_scikit_learn(tmp_path):
    # What a batch run does: ~1 s and ~70 MiB per run process when it did.
    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(("approve", "hold", "reject"))
    model.fit("m", records, y)
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT_IN_A_FRESH_PROCESS, str(tmp_path), json.dumps(records[:20])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out == {"labels": model.predict("m", records[:20]).labels, "sklearn": False, "scipy": False}


def test_a_form_of_another_version_is_not_used(tmp_path):
    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(("approve", "reject"))
    model.fit("m", records, y)
    # The model file replaced by another pipeline behind the resource's back (a copy from
    # elsewhere): the form beside it was compiled from the old file and must not answer.
    other = LocalModel(model_dir=str(tmp_path / "other"))
    other.fit("m", records, ["approve" if label == "reject" else "reject" for label in y])
    (tmp_path / "m.joblib").write_bytes((tmp_path / "other" / "m.joblib").read_bytes())
    got = model.predict("m", records[:50])
    np.testing.assert_allclose(got.probabilities, pipeline_proba(model, "m", records[:50]), rtol=0, atol=1e-12)
    assert got.model_version == other.version("m")


def test_a_value_the_form_cannot_read_gets_the_pipelines_answer(tmp_path):
    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(("approve", "reject"))
    model.fit("m", records, y)
    odd = [{**records[0], "tags": ["a", "b"]}]  # DictVectorizer reads a list as tags=a, tags=b
    np.testing.assert_allclose(model.predict("m", odd).probabilities, pipeline_proba(model, "m", odd), atol=1e-12)
    with pytest.raises(ValueError):  # scikit-learn's refusal of a missing value, as before
        model.predict("m", [{**records[0], "log_amount": None}])


def test_promotion_and_rollback_carry_the_form(tmp_path):
    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(("approve", "hold", "reject"))
    first = model.fit("m", records, y)
    second = model.fit("m-candidate", *examples(("approve", "hold", "reject"), seed=5))
    assert model.promote("m-candidate", "m") == second
    assert model.predict("m", records[:5]).model_version == second
    np.testing.assert_allclose(
        model.predict("m", records).probabilities, pipeline_proba(model, "m", records), atol=1e-12
    )
    # The replaced model is kept with its form, and promoting it back restores it.
    assert (tmp_path / f"m@{first}.linear.npz").exists()
    assert model.promote(f"m@{first}", "m") == first
    np.testing.assert_allclose(
        model.predict("m", records).probabilities, pipeline_proba(model, "m", records), atol=1e-12
    )


def test_a_non_linear_pipeline_is_run_by_scikit_learn(tmp_path):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.tree import DecisionTreeClassifier

    model = LocalModel(model_dir=str(tmp_path))
    records, y = examples(("approve", "reject"))
    model.fit("m", records, y, pipeline=make_pipeline(DictVectorizer(), DecisionTreeClassifier(random_state=0)))
    assert not (tmp_path / "m.linear.npz").exists()
    np.testing.assert_array_equal(model.predict("m", records).probabilities, pipeline_proba(model, "m", records))


def test_an_isotonic_map_is_scikit_learns_isotonic_regression(tmp_path):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 0.95, 400)
    hit = (rng.uniform(0, 1, 400) < conf**2).astype(float)
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(conf, hit)
    probe = np.concatenate([rng.uniform(0, 1, 500), [0.0, 1.0, conf.min(), conf.max()]])
    np.testing.assert_allclose(IsotonicMap.of(fitted).predict(probe), fitted.predict(probe), rtol=0, atol=1e-12)

    # A calibrator saved before the maps held scikit-learn's objects: it loads and applies the same.
    groups = np.where(rng.uniform(0, 1, 400) < 0.5, "local", "llm")
    calibrator = Calibrator.fit(conf, hit, groups)
    legacy = {"models": {g: fitted for g in ("local", "llm")}, "version": calibrator.version, "report": {}}
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(legacy))
    old = Calibrator.load(tmp_path / "old.pkl")
    np.testing.assert_allclose(old.apply(probe, ["local"] * len(probe)), fitted.predict(probe), atol=1e-12)
    calibrator.save(tmp_path / "new.pkl")
    assert Calibrator.load(tmp_path / "new.pkl").version == calibrator.version
