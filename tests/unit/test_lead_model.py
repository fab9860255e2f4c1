"""The lead-scoring model is stored as data (`ai/model.py`): it scores exactly as the
fitted scikit-learn pipeline did, and a stored model that is not such a document (a
pickle, bytes someone else wrote) is refused, never run."""

from __future__ import annotations

import math
import pickle
import random

import orjson
import pytest

from ai import model as lead_model

pytest.importorskip("sklearn")


def _leads(n: int, seed: int = 3) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        senior = rng.random() < 0.3
        rows.append({
            "id": i,
            "email": rng.choice(["a@gmail.com", "b@acme.com", "", "c@corp.de"]),
            "title": rng.choice(["CEO", "Head of IT", "intern", "", "VP Sales"]),
            "source": rng.choice(["web_form", "referral", "event", "other"]),
            "phone": rng.choice([None, "+49 1"]),
            "company": rng.choice([None, "Acme"]),
            "campaign_id": rng.choice([None, 5]),
            "capture_count": rng.randint(0, 30),
            "notes": None,
            "label": int(senior or rng.random() < 0.2),
        })  # fmt: skip
    return rows


def test_it_scores_as_the_fitted_pipeline() -> None:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = _leads(300)
    trained = lead_model.train(rows)
    stored = lead_model.load(trained.model)
    pipeline = make_pipeline(DictVectorizer(), LogisticRegression(max_iter=1000, C=1.0))
    pipeline.fit([lead_model.features(r) for r in rows], [r["label"] for r in rows])
    unseen = _leads(50, seed=11) + [{"title": "Chief Wizard", "source": "never-seen"}]
    expected = pipeline.predict_proba([lead_model.features(r) for r in unseen])[:, 1]
    got = lead_model.score(stored, unseen)
    assert got == pytest.approx([float(p) for p in expected], abs=1e-9)
    assert set(stored.weights) == set(trained.features)


def test_extreme_weights_do_not_overflow() -> None:
    model = lead_model.LinearModel(intercept=0.0, weights={"has_email": 1e6})
    assert model.probability({"email": "a@b.c"}) == 1.0
    assert lead_model.LinearModel(0.0, {"has_email": -1e6}).probability({"email": "a@b.c"}) == 0.0


@pytest.mark.parametrize(
    "stored",
    [
        pickle.dumps({"format": lead_model.FORMAT}),  # a pickle is never unpickled
        b"not json",
        orjson.dumps({"format": "other/1", "intercept": 0.0, "weights": {}}),
        orjson.dumps({"format": lead_model.FORMAT, "intercept": "0", "weights": {}}),
        orjson.dumps({"format": lead_model.FORMAT, "intercept": 0.0, "weights": {"a": "1"}}),
        orjson.dumps({"format": lead_model.FORMAT, "intercept": 0.0, "weights": [1.0]}),
        b'{"format": "nextflow-linear/1", "intercept": 1e999, "weights": {}}',
    ],
)
def test_anything_else_stored_is_refused(stored: bytes) -> None:
    with pytest.raises(lead_model.UnreadableModel):
        lead_model.load(stored)


def test_a_stored_model_round_trips() -> None:
    model = lead_model.LinearModel(intercept=-0.5, weights={"source=event": 1.25, "captures": 0.1})
    again = lead_model.load(model.to_bytes())
    assert again == model
    p = again.probability({"source": "event", "capture_count": 3})
    assert p == pytest.approx(1 / (1 + math.exp(-(-0.5 + 1.25 + 0.3))))
