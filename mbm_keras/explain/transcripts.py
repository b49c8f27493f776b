"""Why a transcription model wrote each character: which audio frames and which context tokens drove it.

A CTC model writes a character where a run of frames has it as their best class (greedy decoding). Each
character is explained at the frame of its run where it is most likely: the explained output is that
frame's log-probability of the character. Its integrated gradients fall on the normalized log-mel frames
(summed per frame, mapped to seconds) and on the context's tokens; its Shapley values share it between the
audio (left out: silence) and the context (left out: no context, the model's learned "no context" input).
"""

import dataclasses
import os

import numpy as np

from mbm_keras.explain import report
from mbm_keras.explain.gradients import integrated_gradients
from mbm_keras.explain.shapley import modality_shapley


@dataclasses.dataclass
class TranscriptAttributions:
    """The explanation of one clip's greedy transcript.

    Attributes:
        transcript: the greedy transcript.
        characters: `[(character, frame, log-probability)]`, one per written character.
        attributions: one `Attributions` per character (targets: `frame * vocabulary size + class`).
        shapley: `ShapleyValues` with one example per character (audio and context's shares).
    """

    transcript: str
    characters: list
    attributions: list
    shapley: object

    def frames(self, feature):
        """`(characters, frames)`: each character's attribution per log-mel frame of the audio `feature`."""
        return np.stack([a.features[feature].reshape(a.features[feature].shape[0], -1).sum(axis=1)
                         for a in self.attributions]) if self.attributions else np.zeros((0, 0))


def emitted_characters(log_probs):
    """`[(class, frame)]`: each character greedy decoding writes, at the frame of its run where it is most
    likely (`log_probs`: one clip's `(frames, vocabulary size)`)."""
    best = np.argmax(log_probs, axis=-1)
    out = []
    start = 0
    for t in range(1, len(best) + 1):
        if t == len(best) or best[t] != best[start]:
            c = int(best[start])
            if c != 0:
                frame = start + int(np.argmax(log_probs[start:t, c]))
                out.append((c, frame))
            start = t
    return out


def transcript_attributions(model, example, vocabulary, steps=32, tolerance=0.01, smoothgrad=0):
    """Explains each character of one clip's greedy transcript.

    Args:
        model: a transcription model (`build_transcription_model`'s).
        example: `{input: array}` of ONE clip (and its context).
        vocabulary: the model's `Vocabulary`.
        steps, tolerance, smoothgrad: `integrated_gradients`'.

    Returns:
        `TranscriptAttributions`.

    Examples:
        >>> t = transcript_attributions(model, {"audio": clip[None], "text": ids[None]}, pre.labels.vocabulary)
        >>> t.transcript, t.frames("audio").shape
    """
    from mbm_keras.transcription import greedy_decode

    example = {k: np.asarray(v) if np.ndim(v) and np.shape(v)[0] == 1 else np.asarray(v)[None]
               for k, v in example.items()}
    log_probs = np.asarray(model.predict(example, verbose=0))[0]
    size = log_probs.shape[-1]
    emitted = emitted_characters(log_probs)
    characters = [(vocabulary.decode([c]), frame, float(log_probs[frame, c])) for c, frame in emitted]
    targets = [frame * size + c for c, frame in emitted]
    attributions = [integrated_gradients(model, example, target=t, steps=steps, tolerance=tolerance,
                                         smoothgrad=smoothgrad) for t in targets]
    shapley = None
    if targets:
        repeated = {k: np.repeat(v, len(targets), axis=0) for k, v in example.items()}
        shapley = modality_shapley(model, repeated, targets=np.asarray(targets))
    return TranscriptAttributions(greedy_decode(log_probs, vocabulary), characters, attributions, shapley)


def explain_transcripts(run, model, pre, manifest, rows, out, options):
    """Each row's greedy transcript, character by character: see `explain`."""
    from mbm_keras.data import make_dataset
    from mbm_keras.explain.explaining import decoded_rows, say, seconds_per_frame, warn_incomplete, words_of
    from mbm_keras.training.balance import select_inputs
    from mbm_keras.transcription.model import transcription_roles

    audio, context = transcription_roles(model, pre)
    vocabulary = pre.labels.vocabulary
    chosen = manifest.subset(rows)
    if pre.columns.get("label") not in chosen.columns:
        pre = pre.without_labels()
    else:
        pre.labels.max_frames = int(model.output.shape[1])
    dataset = make_dataset(chosen, preprocessor=pre, batch_size=len(rows),
                           missing_modalities=[context] if context else False, verbose=False)
    x, y = decoded_rows(select_inputs(dataset, [n for n in (audio, context) if n]), out)
    step = seconds_per_frame(model, audio)
    explained = []
    for i, row in enumerate(rows):
        say(options, i, row, rows)
        example = {k: v[i:i + 1] for k, v in x.items()}
        result = transcript_attributions(model, example, vocabulary, options["steps"], options["tolerance"],
                                         options["smoothgrad"])
        for (char, _, _), a in zip(result.characters, result.attributions):
            warn_incomplete(options, row, a, f", character {char!r}")
        truth = None if y is None else vocabulary.decode(y[i])
        words = words_of(pre.features[context], example[context][0]) if context else ([], [])
        explained.append(_write_row(out, row, result, example, audio, context, words, step, truth,
                                    int(model.output.shape[1])))
    summary = {"run": os.path.abspath(run), "data": manifest.path, "task": "transcription",
               "features": [n for n in (audio, context) if n], "baseline": "zeros", "rows": explained}
    report.write_page(os.path.join(out, "index.html"), _index_page(summary))
    return summary


def _write_row(out, row, result, example, audio, context, words, step, truth, output_frames):
    folder = os.path.join(out, f"row-{row}")
    os.makedirs(folder, exist_ok=True)
    characters = [c for c, _, _ in result.characters]
    # The output's frames span the clip as the log-mel frames do.
    frame_seconds = result.attributions[0].points[audio].shape[0] * step / output_frames if characters else 0.0
    features = [audio] + ([context] if context else [])
    numbers = []
    for k, (char, frame, log_prob) in enumerate(result.characters):
        a = result.attributions[k]
        numbers.append({"character": char, "frame": frame, "seconds": round((frame + 0.5) * frame_seconds, 4),
                        "log_prob": log_prob,
                        "shapley": dict(zip(result.shapley.features, map(float, result.shapley.values[k]))),
                        "empty": float(result.shapley.empty[k]),
                        "attribution_totals": a.totals(), "steps": a.steps, "completeness_error": a.error})
    sections = []
    if not characters:
        sections.append(("Characters", "<p>The greedy transcript is empty: there is no character to explain.</p>"))
    else:
        sections.append(("Each character's sources (Shapley values)", _shapley_table(numbers, features)))
        title = f"{audio}: each character's attribution per frame"
        png = report.transcript_panel(result.attributions[0].points[audio], result.frames(audio), characters, step,
                                      os.path.join(folder, f"{audio}.png"), title)
        sections.append((f"{audio} (audio)", report.inline(png, f"{audio}: attribution per character and frame")))
        if context:
            tokens, kept = words
            grid = np.stack([a.features[context][kept] for a in result.attributions]) if kept else np.zeros((0, 0))
            content = (report.grid_html([f"{c!r}" for c in characters], tokens, grid) if tokens else
                       "<p>The context is empty: the model used its learned \"no context\" input.</p>")
            sections.append((f"{context} (context tokens)", content))
    worst = max((n["completeness_error"] for n in numbers), default=0.0)
    note = (f'<p class="note">Each character is explained at the frame of its run where it is most likely: the '
            f'explained output is that frame\'s log-probability of the character. Integrated gradients: the largest '
            f'completeness error over the characters is {100 * worst:.2f}%.</p>')
    title = f"Row {row}: {result.transcript!r}" + (f", labelled {truth!r}" if truth is not None else "")
    report.write_page(os.path.join(out, f"row-{row}.html"), report.page(title, note, sections))
    return {"row": row, "transcript": result.transcript, "label": truth, "characters": numbers}


def _shapley_table(numbers, features):
    head = "".join(f"<th>{f}</th>" for f in features)
    lines = "".join(f"<tr><td>{n['character']!r}</td><td>{n['seconds']:.2f}</td>"
                    f"<td>{n['log_prob']:.3f}</td>" + "".join(f"<td>{n['shapley'][f]:+.3f}</td>" for f in features)
                    + "</tr>" for n in numbers)
    return (f"<table><tr><th>character</th><th>time (s)</th><th>log-probability</th>{head}</tr>{lines}</table>"
            '<p class="note">Shapley values of each character\'s log-probability: audio left out is silence, the '
            'context left out is no context (the model\'s learned "no context" input).</p>')


def _index_page(summary):
    lines = "".join(f'<tr><td><a href="row-{e["row"]}.html">row {e["row"]}</a></td><td>{e["transcript"]!r}</td>'
                    f'<td>{"" if e["label"] is None else repr(e["label"])}</td><td>{len(e["characters"])}</td></tr>'
                    for e in summary["rows"])
    sections = [("Rows", f"<table><tr><th>row</th><th>transcript</th><th>label</th><th>characters</th></tr>"
                         f"{lines}</table>")]
    return report.page(f"Transcripts of {os.path.basename(summary['run'])} on {os.path.basename(summary['data'])}",
                       "", sections)
