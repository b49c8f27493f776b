"""`task.kind: transcription`: the CTC model a config describes (an audio
feature, optionally a text context fused into every frame), its targets (the
label column as a transcript), its validation scores (WER/CER), `evaluate`'s
report and its exports (`deploy/transcription_export.py`: transcripts out). A
context model is compared with the model without it, and the better is kept."""

import numpy as np

from mbm_keras.errors import ConfigError
from mbm_keras.tasks.base import Task, model_features, register_task
from mbm_keras.training.balance import select_inputs  # the batches with only the inputs named (masks dropped)

# What a cross-attention context fusion takes from model.fusion_kwargs.
FUSION_KEYS = ("units", "num_heads", "num_layers", "dropout")


def roles(task, model_cfg):
    """`(audio feature, context feature or None)` of a transcription config."""
    features = model_features(model_cfg)
    audio = task["audio"] or next((n for n, f in features.items() if f["modality"] == "audio"), None)
    context = task["context"]
    if context is None:
        context = next((n for n, f in features.items() if f["modality"] == "text"), None)
    return audio, context


def check_config(config, source):
    """The model has one audio feature (task.audio), at most one text context
    (task.context) and nothing else; data.columns has the transcript as label."""
    task, model = config["task"], config["model"]
    features = model_features(model)
    audio, context = roles(task, model)
    if audio is None or audio not in features or features[audio]["modality"] != "audio":
        listed = ", ".join(f"{n} ({f['modality']})" for n, f in features.items()) or "none"
        raise ConfigError(f"{source}: task.kind transcription needs an audio feature (task.audio); the model's "
                          f"features: {listed}")
    if context is not None and (context not in features or features[context]["modality"] != "text"):
        raise ConfigError(f"{source}: task.context {context!r} must be a text feature of the model")
    extra = sorted(set(features) - {audio, context})
    if extra:
        raise ConfigError(f"{source}: a transcription model takes the audio ({audio!r}) and one text context; "
                          f"{extra} would be ignored: remove them from the model section")
    if "label" not in config["data"]["columns"]:
        raise ConfigError(f"{source}: task.kind transcription needs the transcript column as data.columns.label")
    label_type = config["data"]["preprocessing"].get("label_type", "transcript")
    if label_type != "transcript":
        raise ConfigError(f"{source}: task.kind transcription reads the label as a transcript; remove "
                          f"data.preprocessing.label_type ({label_type!r})")
    if config["train"]["balance"] not in ("auto", "none"):
        raise ConfigError(f"{source}: train.balance {config['train']['balance']!r} balances a classifier's "
                          f"modalities; a transcription model trains as one (balance: none)")
    unknown = set(model["fusion_kwargs"] or {}) - set(FUSION_KEYS)
    if unknown:
        raise ConfigError(f"{source}: model.fusion_kwargs.{sorted(unknown)[0]} is not an option of the context's "
                          f"cross-attention ({', '.join(FUSION_KEYS)})")


def _encoder(model_cfg, name):
    feature = model_features(model_cfg)[name]
    return feature["encoder"], dict(feature["kwargs"])


def frames(task, model_cfg, pre):
    """The CTC frames the model's audio encoder gives (what a transcript must fit in)."""
    from mbm_keras.encoders.base import create_encoder

    audio, _ = roles(task, model_cfg)
    options = pre.features[audio].model_options()
    encoder, kwargs = _encoder(model_cfg, audio)
    built = create_encoder(encoder, "audio", (options["audio_length"],), sequence=True,
                           sample_rate=options["sample_rate"], **kwargs)
    steps = built.output["sequence"].shape[1]
    if steps is None or len(built.output["sequence"].shape) != 3:
        raise ConfigError(f"config: audio encoder {encoder!r} gives no per-frame sequence to transcribe; use "
                          f"logmel_tcn")
    return int(steps)


def build_from_config(task, model_cfg, pre, with_context=True, audio_from=None):
    """The transcription model (uncompiled) of a config, its inputs named after the features.

    `with_context=False`: the model without the config's context (what a context model is compared with);
    `audio_from`: a trained model whose audio path the new one copies and freezes (see `build_transcription_model`).
    """
    from mbm_keras.transcription import build_transcription_model

    audio, context = roles(task, model_cfg)
    context = context if with_context else None
    audio_options = pre.features[audio].model_options()
    audio_encoder, audio_kwargs = _encoder(model_cfg, audio)
    kwargs = {}
    if context is not None:
        context_options = pre.features[context].model_options()
        context_encoder, context_kwargs = _encoder(model_cfg, context)
        kwargs = dict(context=context_encoder, context_length=context_options["text_length"],
                      context_vocab_size=context_options["vocab_size"], context_kwargs=context_kwargs,
                      context_name=context)
    return build_transcription_model(
        pre.labels.vocabulary, audio=audio_encoder, audio_length=audio_options["audio_length"],
        sample_rate=audio_options["sample_rate"], audio_kwargs=audio_kwargs, audio_name=audio, compile=False,
        audio_from=audio_from, **kwargs, **(model_cfg["fusion_kwargs"] or {}))


def keep_better(summary, plain_summary, audio):
    """The same rule as a fusion's: a context model whose validation CER is
    above the model without context (trained first, on the same rows) is not
    kept. Adds `with_context`, `without_context` and `kept` to `summary`;
    returns True when the model without context is kept."""
    summary["with_context"] = summary.get("val")
    summary["without_context"] = plain_summary.get("val")
    if not summary["with_context"] or not summary["without_context"]:
        summary["kept"] = "the context model (no validation data to compare with)"
        return False
    worse = summary["with_context"]["cer"] > summary["without_context"]["cer"]
    if worse:
        summary["val"] = summary["without_context"]
        summary["kept"] = (f"the model without context ({audio!r} alone): its validation CER "
                           f"{summary['without_context']['cer']:.4f} is below the context model's "
                           f"{summary['with_context']['cer']:.4f}; the context model is in fusion/")
    else:
        summary["kept"] = (f"the context model: validation CER {summary['with_context']['cer']:.4f}, the model "
                           f"without context {summary['without_context']['cer']:.4f}")
    return worse


def warn_long_contexts(manifest, pre, context):
    """Says once how many context cells hold more words than text_length (their ends are cut)."""
    from mbm_keras.data import read_manifest

    if context is None:
        return 0
    manifest = read_manifest(manifest)
    limit = pre.features[context].model_options()["text_length"]
    cells = manifest.column(pre.columns[context])
    long = sum(1 for c in cells if c is not None and len(str(c).split()) > limit)
    if long:
        print(f"{manifest.path}: {long} context cell(s) of column {pre.columns[context]!r} hold more than "
              f"text_length={limit} words; only their first {limit} are used (data.preprocessing.text_length)",
              flush=True)
    return long


def loss_and_metrics():
    import keras

    return keras.losses.CTC(), []


def transcribe_batches(model, dataset, vocabulary, beam=None):
    """`(references, hypotheses)` over a dataset of (inputs, targets) batches;
    references are the targets decoded (characters outside the vocabulary as "?")."""
    from mbm_keras.transcription import decode

    refs, hyps = [], []
    for x, y in dataset:
        log_probs = model(x, training=False)
        hyps += decode(np.asarray(log_probs), vocabulary, beam=beam)
        refs += [vocabulary.decode(row) for row in np.asarray(y)]
    return refs, hyps


def scores(refs, hyps, worst=5):
    """WER, CER, exact share and the `worst` utterances (highest CER) with
    their reference and hypothesis."""
    from mbm_keras.transcription import error_rates

    out = error_rates(refs, hyps)
    per = [(error_rates([r], [h])["cer"], r, h) for r, h in zip(refs, hyps)]
    per.sort(key=lambda t: -t[0])
    out["worst"] = [{"cer": c, "reference": r, "hypothesis": h} for c, r, h in per[:worst] if c > 0]
    return out


def validation_scores(model, val_ds, vocabulary, beam=None):
    """`summary.json` of a transcription run."""
    if val_ds is None:
        return {"task": "transcription", "why": "no data.val"}
    refs, hyps = transcribe_batches(model, val_ds, vocabulary, beam)
    return {"task": "transcription", "rows": len(refs), "decoding": f"beam {beam}" if beam else "greedy",
            "val": scores(refs, hyps)}


def format_scores(summary):
    if "val" not in summary:
        return [f"Transcription: {summary.get('why', 'not measured')}"]
    v = summary["val"]
    kept = [f"kept: {summary['kept']}"] if summary.get("kept") else []
    lines = kept + [f"Transcription of {summary['rows']} validation rows ({summary['decoding']}): WER {v['wer']:.3f}, "
             f"CER {v['cer']:.3f}, exact {v['exact']:.3f}"]
    for w in v["worst"][:3]:
        lines.append(f"  CER {w['cer']:.2f}  ref: {w['reference']!r}  hyp: {w['hypothesis']!r}")
    return lines


@register_task("transcription")
class Transcription(Task):
    options = {
        # the audio feature, and a text feature fused into every frame (None: the model's text feature, if any)
        "audio": (str, None),
        "context": (str, None),
        "beam": (int, None),
    }
    docs = {
        "audio": "The audio feature (None: the model's audio feature).",
        "context": "A text feature fused into every frame by cross-attention (None: the model's text feature, if any).",
        "beam": "Beam-search width of validation transcripts (None: greedy).",
    }
    ranges = {"beam": (1, None, True, None)}
    # model.fusion_kwargs are the context's cross-attention's (FUSION_KEYS), not a fusion's
    checks_fusion_kwargs = False
    endpoints = ("transcribe",)

    def check_config(self, config, source):
        check_config(config, source)

    def preprocessing(self, data):
        return {**data["preprocessing"], "label_type": "transcript", "audio_whole_clip": True}

    def prepare(self, ctx):
        """Rows whose transcript cannot fit the model's frames are row errors (named, or skipped); an empty
        context is the context's mask."""
        from mbm_keras.data.shards import is_shard_folder

        ctx.pre.labels.max_frames = frames(ctx.task, ctx.model_cfg, ctx.pre)
        ctx.audio, ctx.context = roles(ctx.task, ctx.model_cfg)
        ctx.common["missing_modalities"] = [ctx.context] if ctx.context else False
        for key in ("train", "val"):
            if ctx.data[key] and not is_shard_folder(ctx.data[key]):
                warn_long_contexts(ctx.data[key], ctx.pre, ctx.context)

    def batches(self, ctx, dataset):  # ({audio, context}, padded character ids)
        return select_inputs(dataset, [n for n in (ctx.audio, ctx.context) if n])

    def before_fit(self, ctx):
        """With a context and validation data: the model without the context, trained first (compared with,
        and its audio path copied into the context model)."""
        ctx.plain = None
        if ctx.context and ctx.val_ds is not None:
            ctx.plain = ctx.train_single(
                ctx.audio, [ctx.audio], dataset=ctx.train_ds,
                build=lambda: build_from_config(ctx.task, ctx.model_cfg, ctx.pre, with_context=False))

    def build(self, ctx):
        return build_from_config(ctx.task, ctx.model_cfg, ctx.pre, audio_from=ctx.plain)

    def loss_and_metrics(self, ctx):
        return loss_and_metrics()

    def announce(self, ctx):
        return (f"Training the CTC model ({len(ctx.pre.labels.classes)} characters, {ctx.pre.labels.max_frames} "
                f"frames" + (f", context {ctx.context!r} by cross-attention)" if ctx.context else ")"))

    def validate(self, ctx, model):
        vocabulary, beam = ctx.pre.labels.vocabulary, ctx.task["beam"]
        summary = validation_scores(model, ctx.val_ds, vocabulary, beam)
        if ctx.plain is not None:
            plain = validation_scores(ctx.plain, select_inputs(ctx.val_ds, [ctx.audio]), vocabulary, beam)
            if keep_better(summary, plain, ctx.audio):
                ctx.singles, ctx.plan.groups = {ctx.audio: ctx.plain}, {ctx.audio: [ctx.audio]}
                summary["kept_modality"] = ctx.audio
        return summary

    def tuning_score(self, summary):
        if "val" not in summary:
            raise ValueError(f"the run has no validation score ({summary.get('why', 'not measured')})")
        return "cer", summary["val"]["cer"], "min"

    def format_scores(self, summary):
        return format_scores(summary)

    def recognizes(self, model, pre):
        return pre is not None and pre.labels is not None and pre.labels.label_type == "transcript"

    def evaluate(self, run_dir, model, pre, manifest, out, batch_size=32, on_error="raise",
                 allow_outside_root=False, robustness=False, beam=None):
        """WER, CER, the share of exact transcripts, the worst examples
        (reference and hypothesis), and how many transcript characters were
        outside the training vocabulary (each scored as an error, never a crash)."""
        from mbm_keras.data import make_dataset
        from mbm_keras.transcription.model import transcription_roles

        if robustness:
            raise ValueError("robustness covers single-label classification runs; this is a transcription run")
        audio, context = transcription_roles(model, pre)
        pre.labels.max_frames = int(model.output.shape[1])
        before = pre.labels.unknown_count
        ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size,
                          missing_modalities=[context] if context else False, on_error=on_error,
                          allow_outside_root=allow_outside_root)
        ds = select_inputs(ds, [n for n in (audio, context) if n])
        long_contexts = warn_long_contexts(manifest, pre, context)
        refs, hyps = transcribe_batches(model, ds, pre.labels.vocabulary, beam)
        results = {"task": "transcription", "examples": ds.report["kept"], "skipped": ds.report["skipped"],
                   "decoding": f"beam {beam}" if beam else "greedy",
                   "unknown_characters": pre.labels.unknown_count - before, "long_contexts": long_contexts}
        results.update(scores(refs, hyps, worst=10))
        return results

    def report_lines(self, results):
        lines = [f"decoding: {results['decoding']}; characters outside the vocabulary: "
                 f"{results['unknown_characters']} (each an error)"]
        for w in results["worst"]:
            lines.append(f"CER {w['cer']:.2f}  reference: {w['reference']!r}\n           hypothesis: {w['hypothesis']!r}")
        return lines

    def example_inputs(self, model, pre, manifest, count, allow_outside_root=False):
        from mbm_keras.deploy import transcription_export

        return transcription_export.example_inputs(model, pre, manifest, count, allow_outside_root)

    def export(self, model, pre, format, folder, quantize, examples, say):
        from mbm_keras.deploy import transcription_export

        return transcription_export.export_transcription(model, pre, format, folder, quantize, examples, say)

    def report_check(self, check, format, quantize, say):
        if quantize == "none" and check["identical_transcripts"] < 1:
            raise AssertionError(f"The {format} export's greedy transcripts differ from Keras' on "
                                 f"{100 * (1 - check['identical_transcripts']):.1f}% of {check['examples']} examples")

    def serving_functions(self, model, pre):
        from mbm_keras.deploy.transcription_export import serving_functions

        return serving_functions(model, pre)

    def check_predictable(self, path, artifact):
        if artifact != "saved_model":
            raise ValueError(f"{path} is a transcription model: its output is per-frame log-probabilities, not "
                             f"classes; use mbm-keras transcribe --model {path} --audio CLIP [--context TEXT]")

    def answer(self, outputs, classes, top, path):
        return [("transcript", outputs["transcript"].numpy()[0].decode("utf-8"))]
