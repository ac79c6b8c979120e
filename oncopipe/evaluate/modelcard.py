"""The model card of a trained, evaluated model: ``MODELCARD.md`` + ``modelcard.json``.

Written by the evaluate stage beside the weights (``models/<dataset>/``), so the card travels
with the model. It joins what is already recorded, and recomputes nothing: the train stage's
``config.json`` (:class:`oncopipe.core.cards.ModelCard`: architecture, weights, recipe, seed, kept
epoch, raw source), evaluate's ``metrics.json`` (test figures with their intervals and n,
calibration, the operating point chosen on validation) and the dataset's release
(:class:`oncopipe.core.contract.Provenance`). A model trained on the synthetic demo, or on shards
that do not record their raw source, says so in its title and first line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oncopipe.core.atomic import write_text
from oncopipe.core.cards import (
    MODEL_CARD_JSON,
    MODEL_CARD_MD,
    EvaluatedModelCard,
    Figure,
    KeptEpoch,
    ModelCard,
    ShardSummary,
    TrainingData,
)
from oncopipe.core.contract import Provenance

TEST_FIGURES = ("balanced_accuracy", "accuracy", "auc", "sensitivity", "specificity")
INTENDED_USE = ("research on the data pipeline and on methods; not a diagnosis, and not for "
                "any clinical decision")
NOT_FOR = ("diagnosis, screening or triage of any patient",)


def data_card_path(dataset: str) -> str:
    """Where the export stage writes the dataset's data card, relative to the project."""
    return f"data/exports/{dataset}/DATACARD.md"


def weights_origin(card: ModelCard) -> str:
    t = card.train
    trained = ("only the new classification head trained, the backbone frozen"
               if t.finetune == "head" else "every layer trained")
    if t.weights == "none":
        return f"random initialisation (seed {card.seed}), every layer trained"
    if "/" in t.weights or t.weights.endswith((".pt", ".pth")):
        return f"initialised from the state dict `{t.weights}`; {trained}"
    return f"initialised from torchvision's {t.weights} weights of {t.model}; {trained}"


def _figure(metrics: dict[str, Any], name: str) -> Figure:
    ci = metrics["ci"][name]
    return Figure(value=metrics[name], low=ci["low"], high=ci["high"], n=ci["n"],
                  n_patients=ci["n_patients"], n_eff=ci["n_eff"], small_n=ci["small_n"])


def _limitations(card: ModelCard, demo: bool, metrics: dict[str, Any],
                 summary: ShardSummary) -> list[str]:
    out = []
    if card.raw is None:
        out.append("the shards it was trained on do not record their raw data: its source "
                   "is unknown, so the figures below describe no known data")
    elif demo:
        out.append("trained and tested on the built-in synthetic demo data: its figures say "
                   "nothing of any performance on the real release or on patients")
    small = [n for n in (*TEST_FIGURES, "ece") if metrics["ci"][n]["small_n"]]
    if small:
        out.append(f"the test split is small ({metrics['n_test']} samples of "
                   f"{metrics['n_test_patients']} patients): the intervals of "
                   f"{', '.join(small)} are wide (exact at their effective n)")
    op = metrics.get("operating_point")
    if op and not op.get("resolved", True):
        out.append("the operating point's test sensitivity is not resolved by the test "
                   "split (see its range)")
    if not summary.patient_level:
        out.append("the split is by image: the release has no patient ids, so images of one "
                   "patient may sit in training and test alike")
    out.append("tested on a held-out part of the same release only: no external test set, "
               "no other scanners, sites or populations")
    return out


def build(card: ModelCard, metrics: dict[str, Any], summary: ShardSummary,
          release: Provenance | None, bins: int, metrics_file: str) -> EvaluatedModelCard:
    """The card's record, from config.json's card, metrics.json and the shards' summary."""
    demo = card.raw is None or card.raw.source == "demo"
    what = "DEMO model (synthetic data)" if demo else "model"
    title = (f"{card.dataset} {card.task}: {card.architecture.model} {what}, "
             f"profile {card.profile}")
    return EvaluatedModelCard(
        title=title,
        demo=demo,
        weights_origin=weights_origin(card),
        training_data=TrainingData(
            data_card=data_card_path(card.dataset),
            data_source=card.raw.path if card.raw else None,
            manifest_sha256=card.raw.manifest_sha256 if card.raw else None,
            shards_params_hash=card.shards_params_hash,
            train_samples=summary.splits["train"].samples,
            val_samples=summary.splits["val"].samples,
            test_samples=summary.splits["test"].samples),
        kept_epoch=KeptEpoch(epoch=card.best_epoch, epochs_run=card.epochs_run,
                             chosen_on="val", metric=card.train.early_stopping_metric,
                             value=card.best_value),
        metrics=metrics_file,
        ci_level=metrics["ci"]["level"],
        ci_method=metrics["ci"]["method"],
        n_test=metrics["n_test"],
        n_test_patients=metrics["n_test_patients"],
        test={name: _figure(metrics, name) for name in TEST_FIGURES},
        calibration=_figure(metrics, "ece"),
        calibration_bins=bins,
        operating_point=metrics.get("operating_point"),
        intended_use=INTENDED_USE,
        not_for=(*NOT_FOR, *(release.not_for if release else ())),
        limitations=tuple(_limitations(card, demo, metrics, summary)),
        model=card,
    )


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.10g}"


def _op_lines(op: dict[str, Any] | None) -> list[str]:
    if not op:
        return ["No operating point: evaluate had no validation split to choose it on."]
    lines = [f"Chosen on the validation split ({op['n_val']} samples of {op['n_val_patients']} "
             f"patients) for specificity >= {_num(op['target_specificity'])} "
             f"(at least {op['min_val_negatives']} validation negatives); rule: {op['rule']}.",
             ""]
    rows = {"overall": op, **op.get("per_class", {})}
    lines += ["| class | threshold | val sensitivity | val specificity | val positives "
              "(patients) | val negatives (patients) | test sensitivity | test specificity |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        support = (f"{r['val_positives']} ({r['val_positive_patients']}) | "
                   f"{r['val_negatives']} ({r['val_negative_patients']})"
                   if "val_positives" in r else " | ")
        sens = _num(r["test_sensitivity"])
        if r["test_sensitivity"] is None and r.get("test_sensitivity_range"):
            lo, hi = r["test_sensitivity_range"]
            sens = f"not resolved ({_num(lo)} to {_num(hi)})"
        lines.append(f"| {name} | {_num(r.get('threshold'))} | {_num(r['val_sensitivity'])} | "
                     f"{_num(r['val_specificity'])} | {support} | {sens} | "
                     f"{_num(r['test_specificity'])} |")
    return lines


def render(c: EvaluatedModelCard) -> str:
    """The card as Markdown (it lives in ``models/<dataset>/``, so links to the project go two
    folders up); every figure is also in ``modelcard.json``."""
    m, td, k = c.model, c.training_data, c.kept_epoch
    a, t = m.architecture, m.train
    banner = (["> **Demo model: trained on synthetic data. Not a real model; its figures "
               "describe no patients.**", ""] if c.demo else [])
    level = f"{c.ci_level:g}"
    lines = [
        f"# Model card: {c.title}", "", *banner,
        f"Generated by the evaluate stage from `config.json` (training) and `{c.metrics}` "
        "(test); every figure below is in `modelcard.json`.", "",
        "## Intended use", "", f"{c.intended_use[0].upper()}{c.intended_use[1:]}.", "",
        "Must not be used for:", "", *[f"- {n}" for n in c.not_for], "",
        "## Model", "",
        f"- Architecture: {a.model} (width {a.width:g}), input {list(a.sample_shape)} "
        f"({m.layout}, {m.dtype}), {a.n_classes} classes: {', '.join(m.class_names)}",
        f"- Weights: {c.weights_origin}",
        f"- Profile `{m.profile}`, task `{m.task}`, seed {m.seed}, {m.processes} process(es)",
        f"- Recipe: {t.optimizer} lr {t.lr:g}, batch {t.batch_size}, schedule {t.schedule}, "
        f"weight decay {t.weight_decay:g}, up to {t.epochs} epochs, early stopping on "
        f"{t.early_stopping_metric} (patience {t.patience}); the full recipe is `train` in "
        "`modelcard.json`",
        f"- Kept epoch: {k.epoch} of {k.epochs_run} run, chosen on {k.chosen_on} "
        f"({k.metric} {k.value:g})",
        f"- oncopipe {m.code.version}; the code of each stage: {m.code.files}", "",
        "## Training data", "",
        f"- Data card: [{td.data_card}](../../{td.data_card})",
        f"- Raw data: {'`' + td.data_source + '`' if td.data_source else 'unknown'}"
        f"{' (the synthetic demo)' if c.demo and td.data_source else ''}",
        f"- Manifest SHA-256: `{td.manifest_sha256}`; shards' params hash "
        f"`{td.shards_params_hash}`",
        f"- Shards: train {td.train_samples} samples (balancing applied), val "
        f"{td.val_samples}, test {td.test_samples}", "",
        f"## Test figures ({c.n_test} samples of {c.n_test_patients} patients)", "",
        f"Argmax predictions; {level} intervals: {c.ci_method}.", "",
        "| figure | value | low | high | n | patients | effective n |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in c.test.items():
        lines.append(f"| {name} | {_num(f.value)} | {_num(f.low)} | {_num(f.high)} | {f.n} | "
                     f"{f.n_patients} | {_num(f.n_eff)}{' (small)' if f.small_n else ''} |")
    e = c.calibration
    lines += [
        "", "## Calibration", "",
        f"Expected calibration error {_num(e.value)} ({level} interval {_num(e.low)} to "
        f"{_num(e.high)}; {e.n} samples of {e.n_patients} patients, {c.calibration_bins} "
        "bins); the reliability diagram is in the metrics' plots.", "",
        "## Operating point", "", *_op_lines(c.operating_point), "",
        "## Limitations", "", *[f"- {x}" for x in c.limitations], "",
    ]
    return "\n".join(lines)


def write(model_dir: Path, metrics: dict[str, Any], summary: ShardSummary,
          release: Provenance | None, bins: int, metrics_file: str) -> EvaluatedModelCard:
    """Write ``modelcard.json`` and ``MODELCARD.md`` into ``model_dir`` (byte-stable)."""
    card = build(ModelCard.read(model_dir), metrics, summary, release, bins, metrics_file)
    write_text(model_dir / MODEL_CARD_JSON, card.to_json())
    write_text(model_dir / MODEL_CARD_MD, render(card))
    return card
