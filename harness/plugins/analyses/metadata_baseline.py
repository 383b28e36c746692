"""A metadata-only baseline: real vs fake from the file alone, with no pixel decoded.

Features: the format found in the content, the JPEG quality estimated from the quantisation
tables, width, height and file size (:mod:`harness.shortcuts`); the classifier is a
scikit-learn random forest trained on the train split. Whatever accuracy it reaches on a test
split is "solvable without pixels": a pixel detector's accuracy up to that level proves
nothing about real-vs-fake evidence.

It reads no pixels, so it cannot sit behind the :class:`~harness.detector.Detector` contract
(tensors in, logits out); it runs as the analysis ``metadata-baseline`` (put it in a
protocol's ``analyses`` list) and inside ``harness suite info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from harness import hookimpl
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.suite import Sample

if TYPE_CHECKING:  # pandas and scikit-learn load when the baseline runs (harness list stays fast)
    import pandas as pd

NUMERIC = ["jpeg_quality", "width", "height", "log2_size"]


def features(meta: pd.DataFrame) -> pd.DataFrame:
    """The classifier's inputs: format (one-hot), JPEG quality (-1 for other formats), width,
    height, log2 of the byte size."""
    import pandas as pd

    return pd.DataFrame({
        "format": meta["format"].fillna("none").astype(str),
        "jpeg_quality": meta["jpeg_quality"].astype("float64").fillna(-1.0),
        "width": meta["width"].astype("float64"),
        "height": meta["height"].astype("float64"),
        "log2_size": np.log2(meta["size"].astype("float64").clip(lower=1)),
    })


def make_classifier(seed: int = 0):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = ColumnTransformer([("format", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["format"])],
                               remainder="passthrough")
    return make_pipeline(encode, RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed,
                                                        n_jobs=1))


def _readable(meta: pd.DataFrame) -> pd.DataFrame:
    return meta[meta["error"].isna()]


def _scores(labels, predicted) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    labels, predicted = np.asarray(labels), np.asarray(predicted)
    both = len(set(labels.tolist())) == 2
    return {"n": int(labels.size), "acc": float(accuracy_score(labels, predicted)),
            "balanced_acc": float(balanced_accuracy_score(labels, predicted)) if both else None}


def train_test_accuracy(train: pd.DataFrame, test: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Fit on ``train``'s readable files, score ``test``'s: overall and per generator."""
    train, test = _readable(train), _readable(test)
    model = make_classifier(seed).fit(features(train), train["label"].to_numpy())
    predicted = model.predict(features(test))
    out = {"overall": _scores(test["label"], predicted), "per_generator": {}}
    for generator in dict.fromkeys(test["generator"]):
        mask = (test["generator"] == generator).to_numpy()
        out["per_generator"][generator] = _scores(test["label"].to_numpy()[mask], predicted[mask])
    return out


def solvability(meta: pd.DataFrame, generators: Sequence[str] | None = None, seed: int = 0,
                folds: int = 5) -> pd.DataFrame:
    """Per generator: the baseline's test accuracy when trained on that generator's train split;
    where a generator lacks a train or test split of both classes, stratified k-fold
    cross-validated accuracy over all its files instead (``method`` says which)."""
    import pandas as pd
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    meta = _readable(meta)
    rows = []
    for generator in generators or list(dict.fromkeys(meta["generator"])):
        part = meta[meta["generator"] == generator]
        train, test = part[part["split"] == "train"], part[part["split"] == "test"]
        if train["label"].nunique() == 2 and test["label"].nunique() == 2:
            scores = train_test_accuracy(train, test, seed)["overall"]
            rows.append({"generator": generator, "method": "train -> test", **scores})
            continue
        counts = part["label"].value_counts()
        k = min(folds, int(counts.min())) if len(counts) == 2 else 0
        if k < 2:
            rows.append({"generator": generator, "method": "too few images of one class", "n": len(part),
                         "acc": None, "balanced_acc": None})
            continue
        predicted = cross_val_predict(make_classifier(seed), features(part), part["label"].to_numpy(),
                                      cv=StratifiedKFold(k, shuffle=True, random_state=seed))
        rows.append({"generator": generator, "method": f"{k}-fold cross-validation",
                     **_scores(part["label"], predicted)})
    return pd.DataFrame(rows, columns=["generator", "method", "n", "acc", "balanced_acc"])


class MetadataBaselineAnalysis(Analysis):
    name = "metadata-baseline"
    description = ("Accuracy of a metadata-only classifier (format, JPEG quality, width, height, file size; "
                   "no pixels) trained on the protocol's train split: what is solvable without pixels.")
    reference = "aigi-harness shortcut controls"
    defaults: dict[str, Any] = {"max_per_group": 0, "seed": 0}  # 0: every file

    def run(self, context: AnalysisContext) -> AnalysisResult:
        import pandas as pd

        from harness.pipeline import plan_samples
        from harness.protocols import Protocol
        from harness.shortcuts import metadata_table, select

        section = dict(context.config["protocol"])
        protocol = Protocol.from_config(section, name=section.get("name") or "run")
        plan = plan_samples(context.config, protocol, will_train=False)
        train: list[Sample] = select(plan.train, int(self.config["max_per_group"]))
        test: list[Sample] = select(context.samples, int(self.config["max_per_group"]))
        train_meta = metadata_table(train)
        if _readable(train_meta)["label"].nunique() < 2:
            return AnalysisResult(summary={"acc": None, "skipped": "no train split with both classes"})
        result = train_test_accuracy(train_meta, metadata_table(test), int(self.config["seed"]))
        per_generator = pd.DataFrame([{"generator": g, **s} for g, s in result["per_generator"].items()]
                                     + [{"generator": "all", **result["overall"]}])
        return AnalysisResult(
            tables={"summary": per_generator},
            summary={"acc": result["overall"]["acc"], "balanced_acc": result["overall"]["balanced_acc"],
                     "n_train": int(len(train)),
                     "per_generator_acc": {g: s["acc"] for g, s in result["per_generator"].items()}})


@hookimpl
def register_analyses(register):
    register(MetadataBaselineAnalysis)
