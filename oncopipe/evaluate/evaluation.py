"""Evaluate a trained model on the test split: metrics.json, per-sample predictions, plots.

The validation split is predicted too, for one purpose: it chooses the operating point
(the threshold for 95% specificity, see :func:`oncopipe.learn.metrics.operating_point`), which is
then applied to the test split. Nothing is chosen on the test split; the headline accuracy and
balanced accuracy use argmax.

Params read (declare them in dvc.yaml): ``seed``; ``<ds>.evaluate`` (``bootstrap``, ``ci``,
``calibration_bins``); ``<ds>.profile`` and, of that profile's train recipe,
``<ds>.train.<profile>.batch_size``, ``.amp`` and ``.threads``.

Files written into ``out_dir`` (``metrics/<dataset>/``), each atomically:

- ``metrics.json``: see :func:`oncopipe.learn.metrics.compute`, plus ``provenance`` (the train
  profile, the raw data's source and manifest fingerprint from the shard summary, the code
  version; see :mod:`oncopipe.core.provenance`).
- ``summary.json``: the headline figures of metrics.json (:data:`SUMMARY`) and the test
  split's size, the file dvc.yaml declares as the stage's metrics: ``dvc metrics diff`` and
  ``dvc exp show`` list these, not the hundred values of the intervals and classes.
- ``predictions.csv``: one row per test sample (``sample_id, patient_id, actual, predicted``
  and one probability column per class). DVC draws the confusion matrix from it
  (template ``confusion``, x ``actual``, y ``predicted``).
- ``plots/roc.csv`` (``fpr, tpr``; one-vs-rest macro average for more than two classes) and
  ``plots/calibration.csv`` (``confidence, accuracy, count`` per non-empty bin), for DVC's
  ``linear``/``scatter`` templates.
- ``plots.png``: the same three views for a person without DVC (``dvc plots show`` needs a CDN
  to render offline, see docs/pipeline.md); its ROC marks the test figures at the operating
  point.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncopipe.core import provenance
from oncopipe.core.atomic import atomic_path, write_text
from oncopipe.core.cards import ShardSummary
from oncopipe.core.config import DatasetConfig
from oncopipe.core.errors import ModelError
from oncopipe.learn import metrics
from oncopipe.learn.inference import Runtime, load_model, local_runtime, make_loader, predict
from oncopipe.learn.loader import ShardDataset

log = logging.getLogger(__name__)
SUMMARY = ("balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity",
           metrics.OPERATING_POINT_METRIC, "ece", "n_test", "n_test_patients")


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_predictions(path: Path, ds: ShardDataset, y: np.ndarray, prob: np.ndarray,
                      class_names: list[str]) -> None:
    pred = prob.argmax(1)
    rows = [[sid, pid, class_names[a], class_names[b], *(f"{v:.6f}" for v in pr)]
            for sid, pid, a, b, pr in zip(ds.sample_ids, ds.patient_ids, y, pred, prob,
                                          strict=True)]
    header = ["sample_id", "patient_id", "actual", "predicted",
              *(f"p_{n}" for n in class_names)]
    write_text(path, _csv(header, rows))


def write_plot_data(out_dir: Path, y: np.ndarray, prob: np.ndarray, bins: int
                    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Write the ROC and calibration CSVs; returns (fpr, tpr, calibration table)."""
    fpr, tpr = metrics.macro_roc(y, prob)
    write_text(out_dir / "plots" / "roc.csv",
               _csv(["fpr", "tpr"], [[f"{a:.6f}", f"{b:.6f}"] for a, b in zip(fpr, tpr,
                                                                               strict=True)]))
    _, table = metrics.expected_calibration_error(y, prob, bins)
    write_text(out_dir / "plots" / "calibration.csv",
               _csv(["confidence", "accuracy", "count"],
                    [[r["confidence"], r["accuracy"], r["count"]] for r in table]))
    return fpr, tpr, table


def write_png(path: Path, result: dict[str, Any], fpr: np.ndarray, tpr: np.ndarray,
              table: list[dict[str, Any]], class_names: list[str]) -> None:
    """Confusion matrix, ROC and reliability diagram side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    cm = np.asarray(result["confusion_matrix"])
    axes[0].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        axes[0].text(j, i, str(v), ha="center", va="center",
                     color="white" if v > cm.max() / 2 else "black")
    axes[0].set(xticks=range(len(class_names)), yticks=range(len(class_names)),
                xticklabels=class_names, yticklabels=class_names, xlabel="predicted",
                ylabel="actual", title="confusion matrix")
    axes[0].tick_params(axis="x", labelrotation=30)
    axes[1].plot(fpr, tpr)
    axes[1].plot([0, 1], [0, 1], ":", color="grey")
    op = result["operating_point"]
    if op and op["test_sensitivity"] is not None and op["test_specificity"] is not None:
        axes[1].plot([1.0 - op["test_specificity"]], [op["test_sensitivity"]], "o",
                     color="tab:red", label="operating point (chosen on val)")
        axes[1].legend(loc="lower right", fontsize="small")
    axes[1].set(xlabel="false positive rate", ylabel="true positive rate",
                title=f"ROC (AUC {result['auc']})")
    axes[2].plot([0, 1], [0, 1], ":", color="grey")
    axes[2].plot([r["confidence"] for r in table], [r["accuracy"] for r in table], "o-")
    axes[2].set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
                title=f"calibration (ECE {result['ece']})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)


def _predict_split(model: torch.nn.Module, shard_dir: Path, split: str, cfg: DatasetConfig,
                   rt: Runtime) -> tuple[ShardDataset, np.ndarray, np.ndarray]:
    """(dataset, probabilities, labels) of one split, in the index order of ``ShardDataset``."""
    ds = ShardDataset(shard_dir, split)
    loader, _ = make_loader(ds, cfg.train.batch_size * 2, False, cfg.seed, rt, 0)
    prob, y = predict(model, loader, rt, cfg.train.amp)
    return ds, prob, y


def evaluate(cfg: DatasetConfig, shard_dir: Path, model_dir: Path, out_dir: Path,
             png: bool = True) -> dict[str, Any]:
    """Predict validation and test with the trained model; write test metrics, predictions,
    plots, with the operating point chosen on validation."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rt = local_runtime()
    model, card = load_model(model_dir, rt.device)
    summary = ShardSummary.read(shard_dir)
    class_names = list(summary.class_names)
    if card.class_names != summary.class_names or card.shards_params_hash != summary.params_hash:
        raise ModelError(f"{model_dir}: model was trained on other shards than {shard_dir} "
                         "(class names or params hash differ); rerun the train stage")
    val_ds, val_prob, val_y = _predict_split(model, shard_dir, "val", cfg, rt)
    val_ds.close()
    ds, prob, y = _predict_split(model, shard_dir, "test", cfg, rt)
    e = cfg.evaluate
    result = metrics.compute(y, prob, np.asarray(ds.patient_ids), class_names,
                             bootstrap=e.bootstrap, ci=e.ci, bins=e.calibration_bins,
                             seed=cfg.seed,
                             val=(val_y, val_prob, np.asarray(val_ds.patient_ids)))
    # in the order of the summary.json it comes from (sorted keys)
    raw = dict(sorted(summary.raw.model_dump(mode="json").items())) if summary.raw else None
    result["provenance"] = {"profile": cfg.profile, "raw": raw, "code": provenance.code_version()}
    write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    write_text(out_dir / "summary.json",
               json.dumps({k: result[k] for k in SUMMARY}, indent=2) + "\n")
    write_predictions(out_dir / "predictions.csv", ds, y, prob, class_names)
    fpr, tpr, table = write_plot_data(out_dir, y, prob, e.calibration_bins)
    if png:
        write_png(out_dir / "plots.png", result, fpr, tpr, table, class_names)
    ds.close()
    op = result["operating_point"]
    log.info("operating point chosen on %d val samples of %d patients for specificity >= %s: "
             "val sensitivity %s, specificity %s -> test sensitivity %s, specificity %s",
             op["n_val"], op["n_val_patients"], op["target_specificity"], op["val_sensitivity"],
             op["val_specificity"], op["test_sensitivity"], op["test_specificity"])
    log.info("evaluated %d test samples of %d patients: accuracy %s, balanced %s, AUC %s; "
             "wrote %s", result["n_test"], result["n_test_patients"], result["accuracy"],
             result["balanced_accuracy"], result["auc"], out_dir)
    return result
