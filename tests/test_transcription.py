"""Transcription: the vocabulary, WER/CER, the per-frame audio encoder, CTC models with and
without a text context, decoding."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from mbm_keras import build_fusion_model
from mbm_keras.encoders import create_encoder
from mbm_keras.encoders.logmel_tcn import frame_count
from mbm_keras.transcription import (
    Vocabulary,
    build_transcription_model,
    candidate_scores,
    choose_candidates,
    decode,
    error_rates,
    greedy_decode,
    min_frames,
    pad_targets,
)

RATE = 8000


def test_vocabulary_fits_any_script_and_counts_unknown_symbols(tmp_path):
    vocab = Vocabulary.fit(["three  seven one", "two\ttwo"])
    assert vocab.symbols == sorted(set("three seven one two"))
    assert vocab.size == len(vocab.symbols) + 2
    ids = vocab.encode("one zeq")
    assert ids.count(1) == 2 and vocab.unknown_count == 2  # z and q are not in it
    assert vocab.decode(ids) == "one ?e?"
    chinese = Vocabulary.fit(["你好", "好的"])
    assert chinese.size == 5 and chinese.decode(chinese.encode("的你")) == "的你"
    chinese.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").symbols == chinese.symbols
    assert vocab.decode([0, -1, 0]) == ""
    assert min_frames([2, 3, 3, 3, 4]) == 7
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.fit(["", "  "])


def test_error_rates_match_a_count_by_hand():
    scores = error_rates(["three seven one", "two"], ["three one", "two"])
    assert scores["wer"] == pytest.approx(1 / 4)  # one deleted word of four
    assert scores["cer"] == pytest.approx(6 / 18)  # "seven " deleted: 6 of 15 + 3 characters
    assert scores["exact"] == 0.5 and scores["count"] == 2
    # An empty reference: the hypothesis' words are insertions, not a crash.
    assert error_rates(["", "one"], ["two", "one"])["wer"] == pytest.approx(1.0)


@pytest.mark.parametrize("length,rate,stride", [(16000, 16000, 2), (6400, 8000, 2), (12345, 8000, 4)])
def test_frame_count_is_the_encoders_output_length(length, rate, stride):
    encoder = create_encoder("logmel_tcn", "audio", (length,), sequence=True, sample_rate=rate, time_stride=stride,
                             units=16, dilations=(1,))
    assert encoder.output["sequence"].shape[1] == frame_count(length, rate, time_stride=stride)


def test_spec_augment_and_top_db_settings_reach_the_layers_and_bad_ones_are_named():
    encoder = create_encoder("logmel_tcn", "audio", (6400,), sequence=True, sample_rate=RATE, units=8, dilations=(1,),
                             spec_augment={"time_masks": 5, "max_bands": 3})
    masks = encoder.get_layer("spec_augment")
    assert (masks.time_masks, masks.max_time, masks.band_masks, masks.max_bands) == (5, 10, 2, 3)
    assert encoder.get_layer("log_mel").top_db == 80.0
    narrow = create_encoder("logmel_tcn", "audio", (6400,), sequence=True, sample_rate=RATE, units=8, dilations=(1,),
                            top_db=40)
    quiet = np.zeros((1, 6400), np.float32)
    quiet[0, :800] = 0.5 * np.sin(np.arange(800) / 3)  # a loud start, then digital silence
    db = keras.ops.convert_to_numpy(keras.Model(narrow.input, narrow.get_layer("log_mel").output)(quiet))
    assert db.max() - db.min() == pytest.approx(40.0, abs=1e-3)  # the silence is raised to the floor
    with pytest.raises(ValueError, match=r"top_db must be a positive number of decibels. Received: top_db=0"):
        create_encoder("logmel_tcn", "audio", (6400,), sequence=True, sample_rate=RATE, top_db=0)
    x = np.random.default_rng(0).normal(size=(2, 6400)).astype("float32")
    frames = keras.Model(encoder.input, masks.input)(x)
    masked = keras.ops.convert_to_numpy(masks(frames, training=True))
    assert not np.allclose(masked, keras.ops.convert_to_numpy(frames))  # training masks, inference does not
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(masks(frames)), keras.ops.convert_to_numpy(frames))
    with pytest.raises(ValueError, match=r"spec_augment takes time_masks.*Received: \['time_mask'\]"):
        create_encoder("logmel_tcn", "audio", (6400,), sequence=True, sample_rate=RATE, spec_augment={"time_mask": 4})


def _tones(symbols, rng):
    """A clip of 0.12 s tones, one frequency per symbol, with short gaps: a learnable toy speech."""
    freq = {"a": 500.0, "b": 1200.0, "c": 2400.0}
    clip = np.zeros(6400, np.float32)
    start = int(rng.integers(100, 400))
    for s in symbols:
        n = 960
        t = np.arange(n) / RATE
        clip[start:start + n] = 0.4 * np.sin(2 * np.pi * freq[s] * t)
        start += n + int(rng.integers(300, 600))
    return clip + rng.normal(0, 0.01, clip.shape).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abc"), int(rng.integers(2, 5)))) for _ in range(160)]
    audio = np.stack([_tones(t, rng) for t in texts])
    return texts, audio


def test_a_ctc_model_learns_to_transcribe_toy_speech(toy):
    keras.utils.set_random_seed(0)
    texts, audio = toy
    vocab = Vocabulary.fit(texts)
    model = build_transcription_model(vocab, audio_length=6400, sample_rate=RATE, learning_rate=3e-3,
                                      audio_kwargs={"units": 32, "dilations": (1, 2), "time_stride": 4})
    frames = model.output.shape[1]
    assert frames == frame_count(6400, RATE, time_stride=4)
    assert all(min_frames(vocab.encode(t)) <= frames for t in texts)
    y = pad_targets(texts, vocab)
    history = model.fit({"audio": audio[:128]}, y[:128], epochs=25, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][-1] < 0.3 * history.history["loss"][0]
    log_probs = model.predict({"audio": audio[128:]}, verbose=0)
    hypotheses = decode(log_probs, vocab)
    assert hypotheses == [greedy_decode(lp, vocab) for lp in log_probs]  # keras.ops.ctc_decode == the numpy reference
    assert len(decode(log_probs, vocab, beam=4)) == 32
    scores = error_rates(texts[128:], hypotheses)
    assert scores["cer"] < 0.25, (scores, list(zip(texts[128:], hypotheses))[:8])
    # Given four candidates per clip (the true one and three others), the CTC likelihood picks the true one
    # at least as often as the free transcript is exactly right.
    rng = np.random.default_rng(5)
    lists = []
    for t in texts[128:]:
        others = set()
        while len(others) < 3:
            o = "".join(rng.choice(list("abc"), int(rng.integers(2, 5))))
            if o != t:
                others.add(o)
        lists.append([*sorted(others)[:2], t, sorted(others)[2]])
    chosen = choose_candidates(log_probs, lists, vocab)
    picked = np.mean([c == t for c, t in zip(chosen, texts[128:])])
    assert picked >= max(0.75, error_rates(texts[128:], hypotheses)["exact"]), (picked, list(zip(texts[128:], chosen)))


def test_candidate_scores_are_ctc_probabilities_summed_over_alignments():
    import itertools

    vocab = Vocabulary(["a", "b"])  # ids: 0 blank, 1 unknown, 2 a, 3 b
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, vocab.size))
    log_probs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype("float32")
    probs = np.exp(log_probs[0])

    def by_hand(text):  # every path of 4 frames whose collapse (repeats merged, blanks dropped) is `text`
        total = 0.0
        for path in itertools.product(range(vocab.size), repeat=4):
            merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
            if [c for c in merged if c != 0] == vocab.encode(text):
                total += np.prod([probs[t, c] for t, c in enumerate(path)])
        return np.log(total)

    scores = candidate_scores(log_probs, [["a", "ab", "ba", "aa"]], vocab)[0]
    np.testing.assert_allclose(scores, [by_hand(t) for t in ("a", "ab", "ba", "aa")], rtol=1e-4)
    # "abab" needs 4 frames, "aaaa" 7 (a blank between repeats): too long for 4 frames, so impossible.
    scores = candidate_scores(log_probs, [["abab", "aaaa", ""]], vocab)[0]
    assert np.isfinite(scores[0]) and scores[1] == -np.inf and scores[2] == -np.inf
    assert choose_candidates(log_probs[[0, 0]], [["aaaa", "b"], []], vocab) == ["b", ""]
    with pytest.raises(ValueError, match="list of strings"):
        candidate_scores(log_probs, ["a"], vocab)
    with pytest.raises(ValueError, match="1 clips but 2 candidate lists"):
        candidate_scores(log_probs, [["a"], ["b"]], vocab)


def test_context_model_serves_an_empty_context_and_round_trips(tmp_path):
    keras.utils.set_random_seed(1)
    vocab = Vocabulary.fit(["one two three"])
    model = build_transcription_model(vocab, context="cnn", context_vocab_size=12, context_length=6, audio_length=4000,
                                      sample_rate=RATE, units=16, num_heads=2,
                                      audio_kwargs={"units": 16, "dilations": (1,)}, context_kwargs={"embed_dim": 8})
    assert set(model.input) == {"audio", "context"}
    assert model.get_layer("context_fusion").get_config()["null_token"] is True
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.3, 0.3, (3, 4000)).astype("float32")
    empty = np.zeros((3, 6), "int32")
    given = np.array([[2, 3, 4, 0, 0, 0]] * 3, "int32")
    closed = [model.predict({"audio": audio, "context": c}, verbose=0) for c in (empty, given)]
    np.testing.assert_allclose(closed[0], closed[1], atol=1e-6)  # the gate starts closed: audio alone at first
    model.get_layer("context_gate").alpha.assign(1.0)  # as training opens it
    out_empty = model.predict({"audio": audio, "context": empty}, verbose=0)
    out_given = model.predict({"audio": audio, "context": given}, verbose=0)
    assert np.isfinite(out_empty).all() and np.isfinite(out_given).all()
    assert np.abs(out_empty - out_given).max() > 1e-4  # the context reaches every frame
    assert np.allclose(np.exp(out_empty).sum(-1), 1, atol=1e-4)  # log-probabilities
    y = pad_targets(["one", "two", ""], vocab, 4)
    loss = model.fit({"audio": audio, "context": empty}, y, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict({"audio": audio, "context": given}, verbose=0),
                               model.predict({"audio": audio, "context": given}, verbose=0), atol=1e-5)


@pytest.mark.slow  # trains two small models; test-fast keeps its time
def test_a_context_model_can_start_from_a_trained_model_frozen():
    keras.utils.set_random_seed(2)
    vocab = Vocabulary.fit(["one two three"])
    common = dict(audio_length=4000, sample_rate=RATE, audio_kwargs={"units": 16, "dilations": (1,)})
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.3, 0.3, (4, 4000)).astype("float32")
    y = pad_targets(["one", "two", "three", "one"], vocab, 8)
    base = build_transcription_model(vocab, **common)
    base.fit({"audio": audio}, y, epochs=1, verbose=0)
    model = build_transcription_model(vocab, context="cnn", context_vocab_size=12, context_length=6, units=16,
                                      num_heads=2, context_kwargs={"embed_dim": 8}, audio_from=base, **common)
    assert not model.get_layer("audio_encoder").trainable and not model.get_layer("logits").trainable
    empty = np.zeros((4, 6), "int32")
    expected = base.predict({"audio": audio}, verbose=0)
    np.testing.assert_allclose(model.predict({"audio": audio, "context": empty}, verbose=0), expected, atol=1e-5)
    frozen = [w.copy() for w in model.get_layer("audio_encoder").get_weights()]
    given = np.array([[2, 3, 4, 0, 0, 0]] * 4, "int32")
    model.fit({"audio": audio, "context": given}, y, epochs=2, verbose=0)
    for before, after in zip(frozen, model.get_layer("audio_encoder").get_weights()):
        np.testing.assert_array_equal(before, after)  # only the context path trained
    assert float(model.get_layer("context_gate").alpha.numpy()) != 0.0
    other = build_transcription_model(vocab, audio_length=4000, sample_rate=RATE,
                                      audio_kwargs={"units": 8, "dilations": (1,)})
    with pytest.raises(ValueError, match="audio_from's 'audio_encoder' layer does not match"):
        build_transcription_model(vocab, audio_from=other, **common)
    other_rate = build_transcription_model(vocab, audio_length=8000, sample_rate=2 * RATE,
                                           audio_kwargs={"units": 16, "dilations": (1,)})
    with pytest.raises(ValueError, match="audio_from hears its audio differently.*sampling_rate"):
        build_transcription_model(vocab, audio_from=other_rate, **common)
    with pytest.raises(ValueError, match="must be a transcription model; it has no layer 'audio_encoder'"):
        build_transcription_model(vocab, audio_from=keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                                  **common)


def test_cross_attention_options_serve_classifiers_too(tmp_path):
    model = build_fusion_model(audio="logmel_tcn", text="cnn", fusion="cross_attention", num_classes=3,
                               fusion_kwargs={"query": "audio", "null_token": True}, audio_length=4000,
                               sample_rate=RATE, text_length=6, vocab_size=20,
                               audio_kwargs={"units": 16, "dilations": (1,)})
    x = {"audio": np.zeros((2, 4000), "float32"), "text": np.zeros((2, 6), "int32")}  # an empty text
    out = model.predict(x, verbose=0)
    assert np.isfinite(out).all()
    model.save(tmp_path / "c.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "c.keras", safe_mode=True).predict(x, verbose=0),
                               out, atol=1e-5)
    plain = build_fusion_model(audio="logmel_cnn", text="cnn", fusion="cross_attention", num_classes=3,
                               audio_length=4000, sample_rate=RATE, text_length=6, vocab_size=20)
    assert "null_token" not in plain.get_layer("fusion").get_config()  # configs of earlier models are unchanged


def test_targets_too_long_and_tiny_vocabularies_are_refused():
    vocab = Vocabulary.fit(["ab"])
    with pytest.raises(ValueError, match="Transcript 0 has 3 symbols; the targets hold 2"):
        pad_targets(["abb"], vocab, length=2)
    with pytest.raises(ValueError, match="at least one character"):
        build_transcription_model(2, audio_length=4000, sample_rate=RATE)
    with pytest.raises(ValueError, match="context_vocab_size"):
        build_transcription_model(vocab, context="cnn", audio_length=4000, sample_rate=RATE)


# --- the run-config path: train(), evaluate, transcribe, exports, bad rows ---

@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """A context transcription run on the demo's toy speech (sung notes), trained once for the module."""
    from mbm_keras.demo import write_demo_dataset
    from mbm_keras.training import train

    root = tmp_path_factory.mktemp("speech")
    write_demo_dataset(str(root / "demo"), seed=0)
    config = {
        "data": {"train": str(root / "demo" / "speech_train.csv"), "val": str(root / "demo" / "speech_val.csv"),
                 "columns": {"audio": "audio", "text": "context", "label": "transcript"},
                 "preprocessing": {"sample_rate": 8000, "audio_length": 8000, "text_length": 24},
                 "batch_size": 16},
        "model": {"audio": "logmel_tcn", "audio_kwargs": {"units": 48, "dilations": [1, 2, 4]}, "text": "cnn",
                  "text_kwargs": {"embed_dim": 16}, "fusion_kwargs": {"units": 32, "num_heads": 2}},
        "task": {"kind": "transcription", "context": "text"},
        "train": {"epochs": 12, "learning_rate": 0.004},
        "output": str(root / "run"),
    }
    result = train(config, verbose=0)
    return root, result


@pytest.mark.slow  # the shared run trains for a minute; configs/transcription.yaml trains in test-fast
def test_a_config_trains_a_context_transcription_model(speech_run):
    root, result = speech_run
    summary = result["summary"]
    assert summary["task"] == "transcription" and summary["rows"] == 48
    assert summary["val"]["cer"] < 0.3, summary  # chance is far above 0.8; a trained model reads the notes
    # The model without context trained first (its audio path starts the context model), and the two were
    # compared on validation: here the context helps, so the context model is kept.
    assert summary["with_context"]["cer"] <= summary["without_context"]["cer"], summary
    assert summary["kept"].startswith("the context model") and (root / "run" / "singles" / "audio" / "model.keras").is_file()
    model = result["model"]
    assert set(model.input) == {"audio", "text"} and model.get_layer("context_gate") is not None
    pre_config = json.loads((root / "run" / "preprocessor.json").read_text())
    assert pre_config["labels"]["label_type"] == "transcript" and pre_config["options"]["audio_whole_clip"] is True
    assert "".join(pre_config["labels"]["classes"]) == "".join(sorted(set("do re mi fa sol la si")))


@pytest.mark.slow  # the shared run trains for a minute; configs/transcription.yaml trains in test-fast
def test_evaluate_and_transcribe_a_run(speech_run, capsys):
    from mbm_keras.cli import main
    from mbm_keras.evaluate import evaluate

    root, _ = speech_run
    results = evaluate(str(root / "run"), str(root / "demo" / "speech_test.csv"))
    assert results["task"] == "transcription" and results["examples"] == 96 and results["cer"] < 0.3
    assert results["unknown_characters"] == 0 and all({"reference", "hypothesis"} <= set(w) for w in results["worst"])
    beam = evaluate(str(root / "run"), str(root / "demo" / "speech_test.csv"), beam=4)
    assert beam["decoding"] == "beam 4" and abs(beam["cer"] - results["cer"]) < 0.1
    row = next(csv.DictReader(open(root / "demo" / "speech_test.csv")))
    clip = str(root / "demo" / row["audio"])
    assert main(["transcribe", "--model", str(root / "run"), "--audio", clip, "--context", row["context"]]) == 0
    with_context = capsys.readouterr().out.strip()
    assert main(["transcribe", "--model", str(root / "run"), "--audio", clip]) == 0
    without = capsys.readouterr().out.strip()
    assert error_rates([row["transcript"]], [with_context])["cer"] < 0.5, (row, with_context)
    assert set(without) <= set("do re mi fa sol la si?")
    # --candidates: the likeliest of the given transcripts is printed, whichever order they come in.
    decoy = " ".join(reversed(row["transcript"].split())) + " do"
    for order in ([row["transcript"], decoy], [decoy, row["transcript"]]):
        assert main(["transcribe", "--model", str(root / "run"), "--audio", clip, "--context", row["context"],
                     "--candidates", *order]) == 0
        assert capsys.readouterr().out.strip() == row["transcript"]
    assert main(["predict", "--model", str(root / "run"), "--audio", clip]) == 2
    assert "is a transcription model" in capsys.readouterr().err


@pytest.mark.slow
def test_transcription_exports_agree_with_keras(speech_run, tmp_path):
    from mbm_keras.deploy import export_model
    from mbm_keras.deploy.transcribing import transcribe

    root, _ = speech_run
    data = str(root / "demo" / "speech_test.csv")
    saved = export_model(str(root / "run"), "saved_model", str(tmp_path / "sm"), data=data, num_examples=24)
    assert saved["check"]["identical_transcripts"] == 1.0 and saved["check"]["max_abs_diff"] < 1e-4
    row = next(csv.DictReader(open(data)))
    clip = str(root / "demo" / row["audio"])
    assert transcribe(str(tmp_path / "sm"), clip, row["context"]) == transcribe(str(root / "run"), clip, row["context"])
    options = ["do re mi", row["transcript"], "la la la la"]
    assert (transcribe(str(tmp_path / "sm"), clip, row["context"], candidates=options)
            == transcribe(str(root / "run"), clip, row["context"], candidates=options))
    for quantize in ("none", "int8"):
        out = export_model(str(root / "run"), "tflite", str(tmp_path / f"tfl-{quantize}"), quantize=quantize,
                           data=data, num_examples=24)
        assert out["check"]["examples"] == 24
        if quantize == "none":
            assert out["check"]["identical_transcripts"] == 1.0
        else:
            assert out["check"]["identical_transcripts"] >= 0.8, out["check"]
        sidecar = json.loads((tmp_path / f"tfl-{quantize}" / "model.json").read_text())
        assert sidecar["vocabulary"][:2] == ["<blank>", "<unk>"] and sidecar["output"]["name"] == "log_probs"
        assert (tmp_path / f"tfl-{quantize}" / "ctc_decoder.py").is_file()
    # The stdlib decoder shipped beside the .tflite gives numpy's greedy transcript.
    import importlib.util

    spec = importlib.util.spec_from_file_location("ctc_decoder", tmp_path / "tfl-none" / "ctc_decoder.py")
    decoder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decoder)
    log_probs = np.random.default_rng(0).normal(size=(30, len(sidecar["vocabulary"])))
    vocab = Vocabulary(sidecar["vocabulary"][2:])
    assert decoder.greedy_decode(log_probs.tolist(), sidecar["vocabulary"]) == greedy_decode(log_probs, vocab)


@pytest.mark.slow  # the shared run trains for a minute; configs/transcription.yaml trains in test-fast
def test_bad_transcription_rows_are_named_or_skipped(speech_run, tmp_path, capfd):
    import wave

    from mbm_keras.data import DataError
    from mbm_keras.evaluate import evaluate

    root, _ = speech_run
    rows = list(csv.DictReader(open(root / "demo" / "speech_test.csv")))[:6]
    long_clip = tmp_path / "long.wav"
    with wave.open(str(long_clip), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
        f.writeframes(np.zeros(12000, "<i2").tobytes())
    rows[1]["transcript"] = "do ré mi"          # é is outside the vocabulary: counted, scored, no crash
    rows[2]["transcript"] = ""                  # empty transcript
    rows[3]["transcript"] = " ".join(["sol"] * 30)   # more characters than the clip's frames can align
    rows[4]["audio"] = str(long_clip)           # longer than audio_length: its transcript would lose notes
    rows[5]["context"] = " , ".join(["do re mi fa sol"] * 20)  # far longer than text_length: cut
    for r in rows:
        if not os.path.isabs(r["audio"]):
            r["audio"] = str(root / "demo" / r["audio"])
    manifest = tmp_path / "bad.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError) as raised:
        evaluate(str(root / "run"), str(manifest), allow_outside_root=True)
    message = str(raised.value)
    assert "row 3" in message and "empty transcript" in message
    capfd.readouterr()
    results = evaluate(str(root / "run"), str(manifest), on_error="skip", allow_outside_root=True)
    printed = "".join(capfd.readouterr())
    assert "row 4, column 'transcript': transcript of 119 characters needs 119 CTC frames; the audio gives 51" in printed
    assert "row 5, column 'audio'" in printed and "1 context cell(s) of column 'context' hold more than" in printed
    assert results["examples"] == 3 and results["skipped"] == 3  # rows 3, 4 and 5 (the long clip) are skipped
    assert results["unknown_characters"] == 1 and results["long_contexts"] == 1
    report = json.loads(open(results["path"]).read())
    assert report["examples"] == 3
