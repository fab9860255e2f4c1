"""The lead-scoring model: features of a lead, training with a held-out AUC, and
scoring. Pure CPU work with scikit-learn: it runs inside Ray tasks (training, batch
scoring) or a worker thread (one lead online), never on a replica's event loop.

Label: a lead that was converted is 1, one marked `unqualified` is 0; leads still
open (new, contacted, qualified) are what gets scored."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

FREE_MAIL = frozenset(
    {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "gmx.de", "web.de", "icloud.com",
     "mail.ru", "proton.me", "aol.com"}
)  # fmt: skip
SENIOR = ("chief", "ceo", "cto", "cfo", "vp", "vice", "director", "head", "founder", "owner")
ALGORITHM = "logistic-regression/dict-vectorizer"
# How a model is stored: its coefficients as JSON data, never a pickle (unpickling runs
# whatever the bytes say; a database someone else could write must not be code).
FORMAT = "nextflow-linear/1"
MAX_WEIGHTS = 100_000


def features(lead: dict[str, Any]) -> dict[str, float | str]:
    """A lead row (`repo.LEAD_COLUMNS`) as a sparse feature dict."""
    email = (lead.get("email") or "").lower()
    domain = email.rpartition("@")[2]
    title = (lead.get("title") or "").lower()
    out: dict[str, float | str] = {
        "source": str(lead.get("source") or "other"),
        "has_email": 1.0 if email else 0.0,
        "free_mail": 1.0 if domain in FREE_MAIL else 0.0,
        "has_phone": 1.0 if lead.get("phone") else 0.0,
        "has_company": 1.0 if lead.get("company") else 0.0,
        "senior_title": 1.0 if any(w in title.replace("-", " ").split() for w in SENIOR) else 0.0,
        "in_campaign": 1.0 if lead.get("campaign_id") else 0.0,
        "captures": float(min(int(lead.get("capture_count") or 0), 20)),
        "has_notes": 1.0 if lead.get("notes") else 0.0,
    }
    for word in title.replace("-", " ").split()[:4]:
        out[f"title={word}"] = 1.0
    return out


@dataclass
class Trained:
    model: bytes
    auc: float | None
    n_train: int
    n_test: int
    positives: int
    features: list[str]


def train(rows: list[dict[str, Any]], seed: int = 0) -> Trained:
    """Fit on 80% of `rows` (stratified), report the ROC AUC on the other 20%, then
    keep the model refitted on all rows. Rows need `label` (0/1)."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline

    if len(rows) < 10:
        raise ValueError(f"need at least 10 labelled leads to train, found {len(rows)}")
    x = [features(r) for r in rows]
    y = [int(r["label"]) for r in rows]
    positives = sum(y)
    if positives in (0, len(y)):
        raise ValueError("the labelled leads are all of one outcome; nothing to learn")

    def fresh() -> Any:
        return make_pipeline(DictVectorizer(), LogisticRegression(max_iter=1000, C=1.0))

    stratify = y if min(positives, len(y) - positives) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=stratify
    )
    held_out = fresh().fit(x_train, y_train)
    auc = (
        float(roc_auc_score(y_test, held_out.predict_proba(x_test)[:, 1]))
        if len(set(y_test)) == 2
        else None
    )
    final = fresh().fit(x, y)
    vectorizer, regression = final[0], final[1]
    names = [str(n) for n in vectorizer.get_feature_names_out()]
    linear = LinearModel(
        intercept=float(regression.intercept_[0]),
        weights=dict(zip(names, (float(w) for w in regression.coef_[0]), strict=True)),
    )
    return Trained(linear.to_bytes(), auc, len(x_train), len(x_test), positives, names)


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic regression over `features`, as data: one weight per feature
    name (a text feature's name is `key=value`, as scikit-learn's DictVectorizer
    names it) and the intercept. Scores exactly as the fitted pipeline did."""

    intercept: float
    weights: dict[str, float]

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {"format": FORMAT, "intercept": self.intercept, "weights": self.weights}
        )

    def probability(self, lead: dict[str, Any]) -> float:
        z = self.intercept
        for key, value in features(lead).items():
            if isinstance(value, str):
                z += self.weights.get(f"{key}={value}", 0.0)
            else:
                z += self.weights.get(key, 0.0) * value
        # The logistic function, without overflow for large |z|.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


class UnreadableModel(ValueError):
    """A stored model that is not a `FORMAT` document (a pickle from an older version,
    or bytes someone else wrote): refused, never executed; train a new one."""


def load(model: bytes) -> LinearModel:
    """A stored model, checked: the format tag, finite numbers, names as text."""
    try:
        data = orjson.loads(model)
    except orjson.JSONDecodeError:
        raise UnreadableModel("the stored lead model is not in a readable format") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnreadableModel(f"the stored lead model is not a {FORMAT} document")
    intercept, weights = data.get("intercept"), data.get("weights")
    if (
        not isinstance(intercept, int | float)
        or not _finite(intercept)
        or not isinstance(weights, dict)
        or len(weights) > MAX_WEIGHTS
    ):
        raise UnreadableModel("the stored lead model's coefficients are malformed")
    if not all(isinstance(k, str) and _finite(v) for k, v in weights.items()):
        raise UnreadableModel("the stored lead model's coefficients are malformed")
    return LinearModel(float(intercept), {k: float(v) for k, v in weights.items()})


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def score(model: LinearModel, leads: list[dict[str, Any]]) -> list[float]:
    """Probability of conversion for each lead, in order."""
    return [model.probability(lead) for lead in leads]
