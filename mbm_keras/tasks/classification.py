"""`task.kind: classification` (the default): the model's features -> fusion ->
a softmax, sigmoid or linear head, as the labels say (`build_fusion_model`).

The only task whose modalities are balanced (`train.balance`, `train.keep_best_of`,
`training/balance.py`): each modality's own model is trained and compared
with the fusion on validation, and the better is kept. `evaluate` adds the
per-class report, the confusion matrix, each modality's score beside the
fusion's and, on request, the robustness report."""

import os

from mbm_keras.tasks.base import Task, has_masks, register_task


def _head(pre):
    from mbm_keras.heads import get_head

    return get_head(pre.labels.head if pre.labels is not None else pre.model_kwargs().get("head", "softmax"))


@register_task("classification")
class Classification(Task):
    balances = True

    def build(self, ctx):
        from mbm_keras.fusion_model import build_fusion_model

        return build_fusion_model(**ctx.model_kwargs)

    def loss_and_metrics(self, ctx):
        head = _head(ctx.pre)
        return head.loss(), head.metrics()

    def announce(self, ctx):
        return f"Training the fusion ({ctx.model_cfg['fusion']})" if len(ctx.plan.groups) > 1 else None

    def validate(self, ctx, model):
        from mbm_keras.training.balance import validation_summary

        return validation_summary(ctx.out, model, ctx.singles, ctx.plan, ctx.val_ds, _head(ctx.pre),
                                  measure=ctx.used != "multi_worker")

    def format_scores(self, summary):
        from mbm_keras.training.balance import format_summary

        return format_summary(summary)

    def tuning_score(self, summary):
        if summary.get("score") is None:
            raise ValueError(f"the run has no validation score ({summary.get('why', 'not measured')})")
        return summary["metric"], summary["score"], summary["better"]

    def evaluate(self, run_dir, model, pre, manifest, out, batch_size=32, on_error="raise",
                 allow_outside_root=False, robustness=False, beam=None):
        import numpy as np

        from mbm_keras.data import make_dataset
        from mbm_keras.tasks.reports import classification_report, modality_breakdown, robustness_report

        if beam is not None:
            raise ValueError("beam applies to transcription runs; this is a classification run")
        if robustness and (pre.labels is None or pre.labels.label_type != "single"):
            raise ValueError("--robustness covers single-label classification runs")
        # Three passes below (metrics, labels, predictions): decode each file once.
        ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=has_masks(model),
                          on_error=on_error, cache="memory", allow_outside_root=allow_outside_root)
        results = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
        results["examples"] = ds.report["kept"]
        results["skipped"] = ds.report["skipped"]
        if pre.labels is not None and pre.labels.label_type == "single":
            labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
            probabilities = model.predict(ds, verbose=0)
            results.update(classification_report(labels, probabilities, pre.labels.classes))
        breakdown = modality_breakdown(run_dir, manifest, model, pre, ds, batch_size=batch_size, on_error=on_error,
                                       allow_outside_root=allow_outside_root)
        if breakdown is not None:
            results["modalities"] = breakdown
        if robustness:
            prefix = os.path.splitext(out)[0] + "-robustness"
            results["robustness"] = robustness_report(model, ds, out=prefix, preprocessor=pre)
            results["robustness_files"] = [f"{prefix}.json", f"{prefix}.png"]
        return results

    def report_lines(self, results):
        lines = []
        if "per_class" in results:
            lines.append(f"\n{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
            for name, m in results["per_class"].items():
                lines.append(f"{name:<20}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9}")
            classes = list(results["per_class"])
            width = max(6, max(len(c) for c in classes) + 1)
            lines.append("\nconfusion matrix (rows: true, columns: predicted)")
            lines.append(" " * width + "".join(f"{c[:width - 1]:>{width}}" for c in classes))
            for name, row in zip(classes, results["confusion_matrix"]):
                lines.append(f"{name[:width - 1]:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        if "modalities" in results:
            from mbm_keras.training.balance import format_summary

            lines.append("")
            lines += format_summary(results["modalities"])
        if "robustness" in results:
            r = results["robustness"]
            lines.append(f"\n{'modality':<12}{'removed':>9}{'reliance':>10}   accuracy at noise "
                         + " ".join(map(str, r["noise_levels"])))
            for m in r["ablation"]:
                noise = " ".join(f"{r['noise'][m][str(v)]:.3f}" for v in r["noise_levels"])
                lines.append(f"{m:<12}{r['ablation'][m]:>9.3f}{r['reliance'][m]:>10.2f}   {noise}")
            lines.append("robustness report: " + ", ".join(results["robustness_files"]))
        return lines
