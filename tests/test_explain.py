"""`mbm_keras.explain`: modality Shapley values (efficient, exact and sampled, with the model's masks or zero
inputs), integrated gradients (complete for every modality), and `mbm-keras explain` on a trained run with
the sanity checks: the attributions find the informative inputs, move when a modality is corrupted, and
differ on a model whose weights were re-initialized (Adebayo et al. 2018)."""

import numpy as np
import pytest
from conftest import TINY, tiny_inputs

from mbm_keras.explain import integrated_gradients, modality_shapley
from mbm_keras.explain import shapley as shapley_module
from mbm_keras.fusion_model import build_fusion_model

KWARGS = {k: v for k, v in TINY.items() if k not in ("text_preset", "image_preset")}
ENCODERS = {"image": "small_cnn", "text": "cnn", "audio": "logmel_cnn", "tabular": "mlp", "timeseries": "conv1d"}


def _model(modalities, masks=True, seed=0, **encoders):
    import keras

    keras.utils.set_random_seed(seed)
    chosen = {m: encoders.get(m, ENCODERS[m]) for m in modalities}
    return build_fusion_model(**chosen, num_classes=3, missing_modalities=masks, fusion="concat", **KWARGS)


def _inputs(modalities, batch, masks=True):
    x = tiny_inputs(modalities, batch=batch)
    if masks:
        x.update({f"{m}_mask": np.ones((batch, 1), np.float32) for m in modalities})
    return x


def test_shapley_values_are_efficient_exact_or_sampled_and_match_a_count_by_hand(monkeypatch):
    from mbm_keras.explain.shapley import absent_inputs

    modalities = ("image", "text", "audio", "tabular")
    model, x = _model(modalities), _inputs(modalities, 6)
    exact = modality_shapley(model, x)
    assert exact.exact and exact.baseline == "masks" and exact.features == list(modalities)
    np.testing.assert_allclose(exact.values.sum(axis=1), exact.full - exact.empty, atol=1e-6)
    probabilities = model.predict(x, verbose=0)
    np.testing.assert_allclose(exact.full, probabilities[np.arange(6), probabilities.argmax(axis=1)], atol=1e-6)
    # Sampled by permutations (as beyond six features): efficient too, and near the exact values.
    monkeypatch.setattr(shapley_module, "EXACT_UP_TO", 1)
    sampled = modality_shapley(model, x, targets=exact.targets, permutations=300)
    assert not sampled.exact and sampled.permutations == 300
    np.testing.assert_allclose(sampled.values.sum(axis=1), sampled.full - sampled.empty, atol=1e-6)
    np.testing.assert_allclose(sampled.values, exact.values, atol=0.02)
    monkeypatch.undo()
    # Two features by hand: phi_a = ((v(a) - v()) + (v(ab) - v(b))) / 2, with the model's own masks.
    model, x = _model(("image", "text")), _inputs(("image", "text"), 3)
    values = modality_shapley(model, x, targets=2)

    def v(*present):
        return model.predict(absent_inputs(x, ["image", "text"], set(present), True), verbose=0)[:, 2]

    by_hand = ((v("image") - v()) + (v("image", "text") - v("text"))) / 2
    np.testing.assert_allclose(values.values[:, 0], by_hand, atol=1e-6)
    assert values.mean(by=["a", "b", "a"])["a"]["image"] == pytest.approx(float(values.values[[0, 2], 0].mean()))


def test_a_model_without_masks_is_explained_against_zero_inputs_and_says_so():
    model, x = _model(("image", "tabular"), masks=False), _inputs(("image", "tabular"), 4, masks=False)
    values = modality_shapley(model, x)
    assert values.baseline == "zeros"
    zeros = {k: np.zeros_like(v) for k, v in x.items()}
    np.testing.assert_allclose(values.empty, model.predict(zeros, verbose=0)[np.arange(4), values.targets], atol=1e-6)
    np.testing.assert_allclose(values.values.sum(axis=1), values.full - values.empty, atol=1e-6)
    with pytest.raises(ValueError, match="targets must be output columns 0 to 2"):
        modality_shapley(model, x, targets=3)
    with pytest.raises(ValueError, match="inputs lack the model's feature 'tabular'"):
        modality_shapley(model, {"image": x["image"]})


@pytest.mark.parametrize("modality,encoder", [("image", "small_cnn"), ("text", "cnn"), ("text", "gru"),
                                              ("audio", "logmel_cnn"), ("audio", "logmel_tcn"),
                                              ("tabular", "mlp"), ("timeseries", "conv1d")])
def test_integrated_gradients_add_up_to_the_output_change_for_every_modality(modality, encoder):
    model = _model((modality,), **{modality: encoder})
    example = _inputs((modality,), 1)
    a = integrated_gradients(model, example, target=1)
    gap = a.output - a.baseline_output
    assert abs(gap) > 1e-4, gap  # something to attribute
    assert a.error <= 0.01 and abs(sum(a.totals().values()) - gap) <= 0.01 * abs(gap), (a.error, a.steps)
    assert a.output == pytest.approx(float(model.predict(example, verbose=0)[0, 1]), abs=1e-6)
    shape = {"image": (32, 32, 3), "text": (8,), "tabular": (5,), "timeseries": (16, 3)}.get(modality)
    if shape:
        assert a.features[modality].shape == shape
    else:  # audio: the normalized log-mel frames (frames, mels), where the model's front end puts them
        assert a.features[modality].shape == a.points[modality].shape and a.points[modality].ndim == 2


@pytest.mark.slow  # three explanations of a four-modality model
def test_integrated_gradients_of_every_input_at_once_blur_and_smoothgrad():
    modalities = ("image", "text", "audio", "tabular")
    model, x = _model(modalities), _inputs(modalities, 1)
    a = integrated_gradients(model, x)
    assert a.target == int(model.predict(x, verbose=0)[0].argmax()) and a.error <= 0.01
    blurred = integrated_gradients(model, x, target=a.target, baselines={"image": "blur"})
    assert blurred.error <= 0.01 and not np.allclose(blurred.features["image"], a.features["image"])
    smooth = integrated_gradients(model, x, target=a.target, smoothgrad=3, steps=16)
    assert smooth.features["image"].shape == (32, 32, 3) and not np.allclose(smooth.features["image"], a.features["image"])
    with pytest.raises(ValueError, match="baselines\\['image'\\] must be an array, 'zeros', 'black' or 'blur'"):
        integrated_gradients(model, x, baselines={"image": "grey"})


def _biases_set(model, seed=0):
    """Every bias (and the context's gate) set to random values, as training leaves them. With the zero biases
    of a fresh model, a blank input is encoded as the zero vector, where a unit normalization or a layer
    normalization is undefined (0 / 0): the path of integrated gradients would start on that singularity."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.rsplit("/", 1)[-1] in ("bias", "beta", "alpha"):
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    return model


def test_a_retrieval_match_is_explained_over_both_towers():
    import keras

    from mbm_keras.explain.matching import match_model
    from mbm_keras.retrieval import build_retrieval_model

    keras.utils.set_random_seed(0)
    model = _biases_set(build_retrieval_model(
        query={"text": ("text", "cnn")}, candidate={"image": ("image", "small_cnn"), "audio": ("audio", "logmel_cnn")},
        embedding_dim=8, missing_modalities=True, **KWARGS))
    scorer = match_model(model)
    x = _inputs(("text", "image", "audio"), 3)
    # The explained output is the cosine that search ranks by: each query's unit vector times its candidate's.
    queries = model.get_layer("query_tower").predict({k: x[k] for k in ("text", "text_mask")}, verbose=0)
    candidates = model.get_layer("candidate_tower").predict(
        {k: x[k] for k in ("image", "audio", "image_mask", "audio_mask")}, verbose=0)
    np.testing.assert_allclose(scorer.predict(x, verbose=0)[:, 0], (queries * candidates).sum(axis=1), atol=1e-5)
    values = modality_shapley(scorer, x, targets=0)
    assert values.baseline == "masks" and values.features == ["text", "image", "audio"]
    np.testing.assert_allclose(values.values.sum(axis=1), values.full - values.empty, atol=1e-6)
    a = integrated_gradients(scorer, {k: v[:1] for k, v in x.items()}, target=0)
    gap = a.output - a.baseline_output
    assert abs(gap) > 1e-3 and a.error <= 0.01, (gap, a.error, a.steps)
    assert a.features["text"].shape == (8,) and a.features["image"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="is not a retrieval model: it has no query_tower"):
        match_model(_model(("image",)))


@pytest.mark.slow  # one explanation per character (11 s)
def test_each_character_of_a_transcript_is_explained_by_audio_frames_and_context_tokens():
    import keras

    from mbm_keras.explain.transcripts import emitted_characters, transcript_attributions
    from mbm_keras.transcription import Vocabulary, build_transcription_model, greedy_decode

    vocab = Vocabulary.fit(["do re mi", "fa sol la"])
    keras.utils.set_random_seed(0)
    model = _biases_set(build_transcription_model(
        vocab, "logmel_tcn", "cnn", audio_length=2000, sample_rate=8000, context_length=4, context_vocab_size=20,
        audio_kwargs={"units": 8, "dilations": [1]}, context_kwargs={"embed_dim": 8}, units=8, num_heads=1), seed=1)
    rng = np.random.default_rng(1)
    x = {"audio": rng.normal(0, 0.3, (1, 2000)).astype("float32"), "context": np.array([[3, 7, 0, 0]], "int32")}
    log_probs = model.predict(x, verbose=0)[0]
    # Greedy decoding's characters, each at the frame of its run where it is most likely.
    assert emitted_characters(np.log([[.1, .8, .1], [.1, .89, .01], [.9, .09, .01], [.2, .1, .7]])) == [(1, 1), (2, 3)]
    t = transcript_attributions(model, x, vocab)
    assert t.transcript == greedy_decode(log_probs, vocab) and len(t.characters) >= 3
    assert "".join(c for c, _, _ in t.characters) == t.transcript
    for (char, frame, log_prob), a in zip(t.characters, t.attributions):
        assert a.output == pytest.approx(log_prob, abs=1e-5) == pytest.approx(float(log_probs[frame].max()), abs=1e-5)
        assert a.error <= 0.01, (char, a.error, a.steps)
        assert a.features["context"].shape == (4,) and a.features["audio"].ndim == 2
    assert t.frames("audio").shape == (len(t.characters), t.attributions[0].points["audio"].shape[0])
    assert t.shapley.features == ["audio", "context"] and t.shapley.baseline == "zeros"
    np.testing.assert_allclose(t.shapley.values.sum(axis=1), t.shapley.full - t.shapley.empty, atol=1e-5)
    np.testing.assert_allclose(t.shapley.full, [c[2] for c in t.characters], atol=1e-5)


# --- a trained run, through the command line -----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Red or blue, told by the image's colour and the caption's word ("crimson" or "azure"); age and city
    (tabular) are noise. Trained with masks, so each modality can be left out as the model learned."""
    from test_training import run_config

    from mbm_keras.training import train

    root = tmp_path_factory.mktemp("explain")
    train(str(run_config(root, train__epochs=6, data__missing_modalities=True, model__tabular="mlp",
                         data__columns={"image": "img", "text": "caption", "label": "label",
                                        "tabular": {"numeric": ["age"], "categorical": ["city"]}})), verbose=0)
    return root


@pytest.mark.slow  # a training and reports
def test_explain_writes_reports_that_find_the_informative_inputs(trained, capsys):
    import csv
    import json

    from mbm_keras.cli import main

    root = trained
    assert main(["explain", "--model", str(root / "run"), "--data", str(root / "val.csv"), "--rows", "0,1,2,3",
                 "--out", str(root / "report")]) == 0
    assert "Explained 4 rows: " in capsys.readouterr().out
    summary = json.loads((root / "report" / "explanation.json").read_text())
    assert summary["baseline"] == "masks" and summary["exact"] and summary["features"] == ["image", "text", "tabular"]
    mean = summary["mean_shapley"]
    assert mean["image"] + mean["text"] > 10 * abs(mean["tabular"]), mean  # the noise columns barely count
    for row in summary["rows"]:
        assert row["answer"] == row["label"] and row["completeness_error"] <= 0.01
        page = (root / "report" / f"row-{row['row']}.html").read_text()
        assert page.count("data:image/png;base64,") == 3 and "http" not in page  # self-contained
        assert ("crimson" if row["label"] == "red" else "azure") in page
        assert {p.name for p in (root / "report" / f"row-{row['row']}").iterdir()} == {
            "modalities.png", "image.png", "tabular.png"}
    # The caption's colour word carries the most attribution of its words.
    rows = list(csv.DictReader(open(root / "val.csv")))
    shaded = page.split("text (text)")[1]
    word = "crimson" if rows[3]["label"] == "red" else "azure"
    values = {w.split(">")[1].split("<")[0]: float(w.split('data-attribution="')[1].split('"')[0])
              for w in shaded.split('<span class="word"')[1:]}
    assert max(values, key=values.get) == word, values
    assert (root / "report" / "index.html").is_file()
    assert main(["explain", "--model", str(root / "run"), "--data", str(root / "val.csv"), "--rows", "99"]) == 2
    assert "row 99 is not in" in capsys.readouterr().err
    # A file that does not decode: one line naming the row and the file, and no report folder left behind.
    (root / "img" / "broken.png").write_bytes(b"not a png")
    with open(root / "broken.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows([{**rows[0], "img": "img/broken.png"}])
    assert main(["explain", "--model", str(root / "run"), "--data", str(root / "broken.csv"), "--out",
                 str(root / "broken-report")]) == 2
    err = capsys.readouterr().err
    assert "broken.csv row 1, column 'img'" in err and "broken.png): not a JPEG, PNG, BMP or GIF file" in err, err
    assert not (root / "broken-report").exists()


@pytest.mark.slow
def test_shapley_values_move_when_a_modality_is_corrupted_and_gradients_fail_the_randomization_test(trained):
    import keras
    from scipy.stats import spearmanr

    from mbm_keras.data import make_dataset
    from mbm_keras.tasks import load_run

    root = trained
    model, pre, _ = load_run(str(root / "run"))
    x, _ = next(iter(make_dataset(str(root / "val.csv"), preprocessor=pre, batch_size=8, missing_modalities=True,
                                  verbose=False)))
    x = {k: np.asarray(v) for k, v in x.items()}
    clean = modality_shapley(model, x)
    corrupted = modality_shapley(model, {**x, "text": np.ones_like(x["text"])}, targets=clean.targets)  # all [UNK]
    assert corrupted.mean()["text"] < 0.5 * clean.mean()["text"], (clean.mean(), corrupted.mean())
    # A model of the same architecture with fresh weights explains the same example differently.
    fresh = keras.models.clone_model(model)
    example = {k: v[:1] for k, v in x.items()}
    trained_map = integrated_gradients(model, example).features["image"].sum(axis=-1).ravel()
    random_map = integrated_gradients(fresh, example, target=int(clean.targets[0])).features["image"].sum(axis=-1).ravel()
    correlation = spearmanr(np.abs(trained_map), np.abs(random_map)).statistic
    assert correlation < 0.5, correlation
