"""Fit the model chosen in params.train on a seeded split of the clean data.

One function per step (features, split, pipeline, train) so each is testable alone. The pipeline takes a
DataFrame of the feature columns by name, so the service and the drift monitor can call it with raw rows.

Categoricals: hist_gradient_boosting uses its native categorical support (ordinal codes + a categorical mask):
one column per feature, splits on category groups instead of one-vs-rest, and faster than one-hot. The other
models one-hot encode. Both encoders take the category lists recorded in model.json, and unseen categories at
prediction time are tolerated (missing for HGB, all-zero for one-hot) rather than failing a request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from selfheal.core.config import Params, TrainParams
from selfheal.core.errors import DataError
from selfheal.pipeline.evaluation import metric_name, score
from selfheal.pipeline.fixes import HAD_MISSING

PREDICTION = "prediction"  # the reference sample's model-output column (Evidently prediction drift)
HGB_MAX_CATEGORIES = 255  # HistGradientBoosting bins categories; rarer ones beyond this are grouped


def infer_features(df: pd.DataFrame, target: str, overrides: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every column but the target, in data order: numeric from a numeric dtype, else categorical.

    `overrides` (params data.columns) can declare a numeric-looking column categorical (e.g. zip codes); declaring
    a text column numeric is an error here because fix_data is the stage that coerces types.
    """
    overrides = overrides or {}
    features = []
    for name in df.columns:
        if name == target:
            continue
        numeric = pd.api.types.is_numeric_dtype(df[name])
        kind = overrides.get(name, "numeric" if numeric else "categorical")
        if kind == "numeric" and not numeric:
            raise DataError(
                f"column {name!r}: declared numeric in data.columns but has dtype {df[name].dtype} "
                "(fix_data should have coerced it; check data_quality.fix_dtypes)"
            )
        feature: dict[str, Any] = {"name": str(name), "kind": kind}
        if kind == "categorical":
            values = df[name].dropna().unique().tolist()
            feature["categories"] = sorted(values, key=lambda v: (str(type(v)), v))
        features.append(feature)
    if not features:
        raise DataError(f"no feature columns besides the target {target!r}")
    return features


def _mark_nullable(features: list[dict[str, Any]], clean_df: pd.DataFrame) -> None:
    """Numeric features that had missing values (filled by fix_data, or still missing) are `nullable`: every model
    handles NaN there (HGB natively, the others by their imputer), so the service accepts null for them."""
    had_missing = set(clean_df.attrs.get(HAD_MISSING) or [])
    for f in features:
        if f["kind"] == "numeric":
            f["nullable"] = f["name"] in had_missing or bool(clean_df[f["name"]].isna().any())


def split(
    df: pd.DataFrame, target: str, task: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/holdout split; stratified for classification so rare classes land in both parts."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if task == "classification":
        counts = df[target].value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise DataError(
                f"target {target!r}: class(es) {rare.index.tolist()} have a single row; a stratified split "
                "needs at least 2 rows per class"
            )
        stratify = df[target]
    try:
        train_df, holdout_df = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as exc:  # e.g. fewer holdout rows than classes
        raise DataError(f"cannot split {len(df)} rows with test_size={test_size}: {exc}") from None
    return train_df, holdout_df


def _estimator(task: str, tp: TrainParams) -> Any:
    from sklearn import ensemble, linear_model

    regression = task == "regression"
    if tp.model == "hist_gradient_boosting":
        cls = ensemble.HistGradientBoostingRegressor if regression else ensemble.HistGradientBoostingClassifier
        # early stopping only as params.yaml says (sklearn's "auto" would switch it on by data size)
        return cls(**tp.hist_gradient_boosting.model_dump(), random_state=tp.seed)
    if tp.model == "random_forest":
        cls = ensemble.RandomForestRegressor if regression else ensemble.RandomForestClassifier
        return cls(**tp.random_forest.model_dump(), n_jobs=-1, random_state=tp.seed)
    alpha = tp.linear.alpha
    if regression:
        return linear_model.Ridge(alpha=alpha)
    # the same knob for both tasks: alpha is the L2 strength, LogisticRegression's C its inverse
    return linear_model.LogisticRegression(C=1.0 / alpha if alpha > 0 else np.inf, max_iter=1000)


def build_pipeline(features: list[dict[str, Any]], task: str, train_params: TrainParams) -> Any:
    """Preprocessing by column name + the estimator, unfitted. Categories come from `features`, not the data."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [f["name"] for f in features if f["kind"] == "numeric"]
    categorical = [f for f in features if f["kind"] == "categorical"]
    cat_names = [f["name"] for f in categorical]
    categories = [f["categories"] for f in categorical]
    estimator = _estimator(task, train_params)
    model = train_params.model

    if model == "hist_gradient_boosting":
        cat_step = OrdinalEncoder(
            categories=categories,
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            max_categories=HGB_MAX_CATEGORIES,
        )
        num_step = "passthrough"  # HGB handles missing values natively
    else:
        cat_step = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)
        # requests and monitored batches may have gaps even though the clean training data has none
        num_step = SimpleImputer(strategy="median")
        if model == "linear":
            num_step = make_pipeline(num_step, StandardScaler())

    transformers = []
    if cat_names:
        transformers.append(("cat", cat_step, cat_names))
    if numeric:
        transformers.append(("num", num_step, numeric))
    pre = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    if model == "hist_gradient_boosting":
        # ColumnTransformer output: the categorical block first, then the numeric one
        mask = [True] * len(cat_names) + [False] * len(numeric)
        estimator.set_params(categorical_features=mask if cat_names else None)
    return Pipeline([("preprocess", pre), ("model", estimator)])


def single_threaded() -> Any:
    """Limit OpenMP to one thread. When cores are shared (pytest -n 2, parallel `dvc exp run`, a busy server),
    OpenMP's spin-waiting makes HistGradientBoosting 5-20x slower; single-threaded it fits 16k rows in under a
    second and predicts a few thousand rows in milliseconds. (Random forests use joblib threads: unaffected.)"""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def predict(pipeline: Any, X: pd.DataFrame) -> np.ndarray:
    """`pipeline.predict`, single-threaded (see `single_threaded`): what every caller of a model should use."""
    with single_threaded():
        return pipeline.predict(X)


def _check(df: pd.DataFrame, target: str, task: str) -> None:
    if target not in df.columns:
        raise DataError(f"target column {target!r} not in the clean data (columns: {list(df.columns)})")
    if PREDICTION in df.columns:
        raise DataError(f"column {PREDICTION!r} is reserved for the model output in the drift reference; rename it")
    if df[target].isna().any():
        raise DataError(f"target column {target!r}: {int(df[target].isna().sum())} missing value(s)")
    if task == "regression" and not pd.api.types.is_numeric_dtype(df[target]):
        raise DataError(
            f"target column {target!r}: task is regression but dtype is {df[target].dtype} "
            "(set data.task: classification for labels)"
        )
    infinite = int(np.isinf(df[target].to_numpy(dtype="float64")).sum()) if task == "regression" else 0
    if infinite:
        raise DataError(f"target column {target!r}: {infinite} non-finite value(s) (inf); fix_data drops such rows")
    if task == "classification" and df[target].nunique() < 2:
        raise DataError(f"target column {target!r}: classification needs at least 2 classes")
    if len(df) < 10:
        raise DataError(f"only {len(df)} rows in the clean data; need at least 10 to train and hold out")


def train(
    clean_df: pd.DataFrame, params: Params, data_md5: str | None = None
) -> tuple[Any, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Split, fit and describe. Returns (pipeline, meta, reference_df, holdout_df).

    reference_df is a seeded sample of at most train.reference_rows training rows with the target and a
    `prediction` column: what the drift monitor compares the current batch (and its predictions) against.
    """
    target, task, tp = params.data.target, params.data.task, params.train
    _check(clean_df, target, task)
    features = infer_features(clean_df, target, params.data.columns)
    _mark_nullable(features, clean_df)
    names = [f["name"] for f in features]
    train_df, holdout_df = split(clean_df, target, task, tp.test_size, tp.seed)

    pipeline = build_pipeline(features, task, tp)
    with single_threaded():
        started = time.perf_counter()
        pipeline.fit(train_df[names], train_df[target])
        fit_seconds = time.perf_counter() - started
    train_pred = predict(pipeline, train_df[names])
    train_score = score(task, train_df[target], train_pred)[metric_name(task)]

    reference_df = train_df.assign(**{PREDICTION: train_pred})
    if len(reference_df) > tp.reference_rows:
        reference_df = reference_df.sample(n=tp.reference_rows, random_state=tp.seed)

    meta = {
        "task": task,
        "target": target,
        "model": tp.model,
        "params": {**getattr(tp, tp.model).model_dump(), "seed": tp.seed, "test_size": tp.test_size},
        "features": features,
        "data_md5": data_md5,
        "n_train": len(train_df),
        "n_holdout": len(holdout_df),
        "metric_name": metric_name(task),
        "train_score": train_score,
        "fit_seconds": round(fit_seconds, 3),
    }
    return pipeline, meta, reference_df.reset_index(drop=True), holdout_df.reset_index(drop=True)
