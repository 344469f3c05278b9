"""A local model that reads free text: TF-IDF over words and character n-grams (robust to
typos and to several languages without a tokenizer per language) into a linear model whose
probabilities are calibrated by cross-validation, so a threshold on them means what it says.

Records are dicts; the text is `record["text"]`. The pipeline is fitted and kept by the
`local_model` resource like any other local model (`LocalModel.fit(..., pipeline=...)`), so
versions, promotion and prediction work the same for text as for tabular features.
"""

from __future__ import annotations

from typing import Sequence

from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC


def record_texts(records: Sequence[dict]) -> list[str]:
    """The text of each record (module-level: a fitted pipeline is pickled with it)."""
    return [str(r.get("text", "")) for r in records]


def text_pipeline(seed: int = 0, c: float = 0.5, folds: int = 3) -> Pipeline:
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=20_000)),
            (
                "chars",
                TfidfVectorizer(
                    sublinear_tf=True, min_df=2, analyzer="char_wb", ngram_range=(3, 4), max_features=30_000
                ),
            ),
        ]
    )
    # A linear SVM is fast on sparse n-grams; its margins become probabilities by calibration.
    model = LinearSVC(C=c, random_state=seed)
    return make_pipeline(
        FunctionTransformer(record_texts), features, CalibratedClassifierCV(model, cv=folds, method="sigmoid")
    )
