"""The lead-scoring model: features of a lead, training with a held-out AUC, and
scoring. Pure CPU work with scikit-learn: it runs inside Ray tasks (training, batch
scoring) or a worker thread (one lead online), never on a replica's event loop.

Label: a lead that was converted is 1, one marked `unqualified` is 0; leads still
open (new, contacted, qualified) are what gets scored."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

FREE_MAIL = frozenset(
    {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "gmx.de", "web.de", "icloud.com",
     "mail.ru", "proton.me", "aol.com"}
)  # fmt: skip
SENIOR = ("chief", "ceo", "cto", "cfo", "vp", "vice", "director", "head", "founder", "owner")
ALGORITHM = "logistic-regression/dict-vectorizer"


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
    names = [str(n) for n in final[0].get_feature_names_out()]
    return Trained(pickle.dumps(final), auc, len(x_train), len(x_test), positives, names)


def load(model: bytes) -> Any:
    """A stored model (written by `train` in our own task, never from user input)."""
    return pickle.loads(model)  # noqa: S301


def score(model: Any, leads: list[dict[str, Any]]) -> list[float]:
    """Probability of conversion for each lead, in order."""
    if not leads:
        return []
    return [float(p) for p in model.predict_proba([features(r) for r in leads])[:, 1]]
