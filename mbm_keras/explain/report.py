"""Pictures of an explanation, and the self-contained HTML page that holds them.

One panel per feature, drawn for its modality: the image with its attribution as a heat map, the words shaded
by theirs, the normalized log-mel frames with their attribution over time, a bar per tabular column, a line
per sensor channel; and the modality Shapley values as bars. Each panel is a PNG file; the page inlines them
(nothing is fetched).
"""

import base64
import html
import io
import os

import numpy as np

POSITIVE, NEGATIVE = "#1a7f37", "#cf222e"  # raised / lowered the explained output


def _figure(width=5.0, height=3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height))


def _png(plt, fig, path):
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


def shapley_panel(names, values, path, title, unit="share of the answer's probability"):
    """Bars of each feature's Shapley value (green: raised the answer, red: lowered it)."""
    plt, (fig, ax) = _figure(5.0, 0.5 + 0.45 * len(names))
    order = np.argsort(np.abs(values))
    ax.barh([names[i] for i in order], [values[i] for i in order],
            color=[POSITIVE if values[i] >= 0 else NEGATIVE for i in order])
    ax.axvline(0, color="#57606a", linewidth=0.8)
    ax.set_xlabel(f"Shapley value ({unit})")
    ax.set_title(title, fontsize=9)
    return _png(plt, fig, path)


def image_panel(image, attribution, path, title):
    """The image beside its attribution (summed over channels) as a heat map over it."""
    plt, (fig, axes) = _figure(6.0, 3.0)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(6.0, 3.0))
    shown = np.clip(image / (255.0 if image.max() > 1.5 else 1.0), 0, 1)
    heat = attribution.sum(axis=-1)
    limit = float(np.abs(heat).max()) or 1.0
    axes[0].imshow(shown)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(shown.mean(axis=-1), cmap="gray", alpha=0.6)
    drawn = axes[1].imshow(heat, cmap="RdYlGn", vmin=-limit, vmax=limit, alpha=0.65)
    axes[1].set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(drawn, ax=axes[1], fraction=0.046)
    return _png(plt, fig, path)


def audio_panel(frames, attribution, seconds_per_frame, path, title):
    """The normalized log-mel frames (time across) and their attribution summed per frame, on one time axis."""
    plt, (fig, ax) = _figure(6.0, 3.4)
    plt.close(fig)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 3.4), sharex=True, height_ratios=[2, 1])
    times = np.arange(frames.shape[0]) * seconds_per_frame
    top.imshow(frames.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, frames.shape[0] * seconds_per_frame, 0, frames.shape[1]))
    top.set_ylabel("mel band")
    top.set_title(title, fontsize=9)
    per_frame = attribution.sum(axis=1)
    bottom.bar(times, per_frame, width=seconds_per_frame, align="edge",
               color=[POSITIVE if v >= 0 else NEGATIVE for v in per_frame])
    bottom.axhline(0, color="#57606a", linewidth=0.8)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("attribution")
    return _png(plt, fig, path)


def cells_panel(names, attribution, path, title):
    """A bar per column (a categorical column's one-hot slots summed)."""
    plt, (fig, ax) = _figure(5.0, 0.5 + 0.4 * len(names))
    ax.barh(names[::-1], attribution[::-1], color=[POSITIVE if v >= 0 else NEGATIVE for v in attribution[::-1]])
    ax.axvline(0, color="#57606a", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("attribution")
    return _png(plt, fig, path)


def series_panel(series, attribution, path, title):
    """Each channel of a sensor series, with its attribution per step below."""
    plt, (fig, ax) = _figure(6.0, 3.2)
    plt.close(fig)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 3.2), sharex=True)
    top.plot(series)
    top.set_title(title, fontsize=9)
    per_step = attribution.sum(axis=-1)
    bottom.bar(np.arange(len(per_step)), per_step, color=[POSITIVE if v >= 0 else NEGATIVE for v in per_step])
    bottom.set_xlabel("step")
    return _png(plt, fig, path)


def transcript_panel(frames, attribution, characters, seconds_per_frame, path, title):
    """The normalized log-mel frames (time across) above a heat map of each output character's attribution per
    frame (one row per character, top to bottom in the transcript's order), on one time axis."""
    plt, (fig, ax) = _figure(6.0, 3.4)
    plt.close(fig)
    height = 2.0 + 0.22 * len(characters)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, height), sharex=True,
                                      height_ratios=[2, max(1, 0.22 * len(characters))])
    end = frames.shape[0] * seconds_per_frame
    top.imshow(frames.T, origin="lower", aspect="auto", cmap="magma", extent=(0, end, 0, frames.shape[1]))
    top.set_ylabel("mel band")
    top.set_title(title, fontsize=9)
    per_frame = np.asarray(attribution, float)  # (characters, frames)
    limit = float(np.abs(per_frame).max()) or 1.0
    bottom.imshow(per_frame, aspect="auto", cmap="RdYlGn", vmin=-limit, vmax=limit, interpolation="nearest",
                  extent=(0, end, len(characters), 0))
    bottom.set_yticks(np.arange(len(characters)) + 0.5, [c if c.strip() else "\u2423" for c in characters], fontsize=7)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("output character")
    return _png(plt, fig, path)


def grid_html(rows, columns, values):
    """A table of `values` (rows x columns), each cell shaded by its value (green raised, red lowered)."""
    values = np.asarray(values, float)
    limit = float(np.abs(values).max()) if values.size else 1.0
    limit = limit or 1.0
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    lines = []
    for label, line in zip(rows, values):
        cells = "".join(
            f'<td class="cell" title="{v:+.4f}" data-attribution="{v:.6g}" style="background: rgba('
            f'{"26,127,55" if v >= 0 else "207,34,46"}, {abs(v) / limit:.2f})"></td>' for v in line)
        lines.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f'<table class="grid"><tr><th></th>{head}</tr>{"".join(lines)}</table>'


def words_html(words, attribution):
    """The words as spans shaded by their attribution (green raised, red lowered the answer)."""
    limit = float(np.abs(attribution).max()) or 1.0
    spans = []
    for word, value in zip(words, attribution):
        colour = "26,127,55" if value >= 0 else "207,34,46"
        spans.append(f'<span class="word" title="{value:+.4f}" data-attribution="{value:.6g}" '
                     f'style="background: rgba({colour}, {abs(value) / limit:.2f})">{html.escape(word)}</span>')
    return " ".join(spans)


def page(title, summary, sections):
    """A self-contained HTML page: `sections` is a list of `(heading, html)`."""
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{content}\n</section>" for h, content in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; color: #1d2327; }}
h1 {{ font-size: 1.35rem; }} h2 {{ font-size: 1.05rem; margin-top: 1.6rem; }}
.note {{ color: #5f6b73; }} img {{ max-width: 100%; }}
.word {{ padding: .1rem .2rem; border-radius: 3px; }}
table {{ border-collapse: collapse; }} .grid td.cell {{ min-width: 1.4rem; }} td, th {{ padding: .2rem .6rem; border-bottom: 1px solid #d0d7de; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{summary}
{body}
</body></html>
"""


def inline(png, alt):
    """An `<img>` holding the PNG bytes."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def write_page(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
