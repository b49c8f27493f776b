"""benchmarks/av_digits.py: its building blocks on small synthetic files, and
one quick run on the real recordings and handwriting when ../shared/data is there."""

import gzip
import importlib.util
import os
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("av_digits", ROOT / "benchmarks" / "av_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


av = _load_benchmark()


def _write_idx(folder, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + h.to_bytes(4, "big") + w.to_bytes(4, "big")
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def _write_wav(path, samples, rate=8000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """3 digits: images are a bright bar whose position is the digit; recordings
    are tones whose pitch is the digit; 3 speakers x 4 takes each."""
    root = tmp_path_factory.mktemp("av_data")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    images = rng.integers(0, 40, (len(labels), 28, 28))
    for i, d in enumerate(labels):
        images[i, 4 + 8 * d : 10 + 8 * d, 4:24] = 230
    _write_idx(root / "mnist", images, labels)
    (root / "fsdd").mkdir()
    t = np.arange(4000) / 8000
    for d in range(3):
        for speaker in ("anna", "bert", "carl"):
            for take in range(4):
                tone = 0.4 * np.sin(2 * np.pi * (300 + 400 * d + 20 * take) * t) + rng.normal(0, 0.02, t.shape)
                _write_wav(root / "fsdd" / f"{d}_{speaker}_{take}.wav", tone)
    return root


def test_load_mnist_reads_idx_and_names_a_bad_file(synthetic_data, tmp_path):
    images, labels = av.load_mnist(synthetic_data / "mnist")
    assert images.shape == (90, 28, 28) and images.dtype == np.uint8 and np.bincount(labels).tolist() == [30, 30, 30]
    bad = tmp_path / "mnist"
    bad.mkdir()
    with gzip.open(bad / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + bytes(12))
    with gzip.open(bad / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes(8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: not an IDX image file \(magic 2049"):
        av.load_mnist(bad)
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        av.load_mnist(tmp_path / "nowhere")


def test_list_recordings_parses_names_and_rejects_others(synthetic_data, tmp_path):
    recordings = av.list_recordings(synthetic_data / "fsdd")
    assert len(recordings) == 36
    assert recordings[0] == {"path": str(synthetic_data / "fsdd" / "0_anna_0.wav"), "digit": 0, "speaker": "anna", "take": 0}
    (tmp_path / "x").mkdir()
    _write_wav(tmp_path / "x" / "seven-anna.wav", np.zeros(100))
    with pytest.raises(ValueError, match=r"seven-anna.wav: expected a name like 3_theo_12.wav"):
        av.list_recordings(tmp_path / "x")


def test_pca_keeps_the_smallest_number_of_components_holding_the_energy():
    rng = np.random.default_rng(0)
    # 4 directions with energies 50, 25, 15, 10 (%), plus a constant offset.
    basis = np.linalg.qr(rng.normal(size=(64, 4)))[0].T
    coeff = rng.normal(size=(4000, 4)) * np.sqrt([50, 25, 15, 10])
    images = (100 + coeff @ basis * 10).reshape(-1, 8, 8)
    pca = av.PCADegrader(0.6).fit(images)
    assert pca.num_components == 2 and 0.7 < pca.kept_energy < 0.8
    assert av.PCADegrader(0.25).fit(images).num_components == 1
    out = av.PCADegrader(0.6).fit(images).transform(images[:5])
    assert out.shape == (5, 8, 8) and out.dtype == np.uint8
    # What is kept is the projection on the top directions: the third direction is gone.
    centred = out.reshape(5, -1).astype(float) - pca.mean
    assert np.abs(centred @ basis[2]).max() < 0.1 * np.abs(coeff[:5, 2] * 10).max() + 2
    with pytest.raises(ValueError, match="energy must be in"):
        av.PCADegrader(0)


def test_mix_noise_hits_the_requested_snr():
    rng = np.random.default_rng(0)
    clean = 0.2 * np.sin(np.linspace(0, 800, 40000)).astype(np.float32)
    for snr in (0.0, -6.0):
        noisy = av.mix_noise(clean, snr, rng).astype(np.float64)
        gain = noisy @ clean / (clean @ clean)  # < 1 where the mix was scaled down to avoid clipping
        measured = 10 * np.log10(np.mean((gain * clean) ** 2) / np.mean((noisy - gain * clean) ** 2))
        assert abs(measured - snr) < 0.2 and 0.3 < gain < 1.01
    loud = av.mix_noise(np.full(1000, 0.9, np.float32), -12.0, rng)
    assert np.abs(loud).max() <= 0.99  # scaled down, never clipped


def test_pairs_match_digits_and_pools_are_disjoint(synthetic_data):
    recordings = av.list_recordings(synthetic_data / "fsdd")
    _, labels = av.load_mnist(synthetic_data / "mnist")
    train, test = av.pair_images(recordings, labels, seed=0)
    digits = np.array([r["digit"] for r in recordings])
    assert (labels[train] == digits).all() and (labels[test] == digits).all()
    assert len(set(train)) == len(train) and len(set(test)) == len(test) and not set(train) & set(test)
    with pytest.raises(ValueError, match=r"digit 0: 12 recordings need 24 images, the MNIST files have 10"):
        av.pair_images(recordings, np.repeat(np.arange(3), 10), seed=0)


def test_files_and_fold_manifests(synthetic_data, tmp_path):
    from mbm_keras.data import read_manifest

    spec = dict(av.SPEC, image_energy=0.5)
    table, info = av.build_files(str(synthetic_data), str(tmp_path), spec, verbose=False)
    folder = Path(info["folder"])
    assert len(table) == 36 and info["pca_components"] >= 1 and info["snr_db"] == [0.0, -6.0, -12.0]
    stamp = (folder / "table.json").stat().st_mtime_ns
    assert av.build_files(str(synthetic_data), str(tmp_path), spec, verbose=False)[1]["folder"] == str(folder)
    assert (folder / "table.json").stat().st_mtime_ns == stamp  # built once per spec

    train_path, tests = av.fold_manifests(table, str(folder), "carl")
    train = read_manifest(train_path)
    assert {r["speaker"] for r in train.rows} == {"anna", "bert"} and len(train) == 24
    both = read_manifest(tests["both"])
    assert {r["speaker"] for r in both.rows} == {"carl"} and len(both) == 12
    assert not {r["image"] for r in train.rows} & {r["image"] for r in both.rows}  # disjoint image pools
    assert all(r["image"] is None for r in read_manifest(tests["image missing"]).rows)
    assert all(r["audio"] is None for r in read_manifest(tests["audio missing"]).rows)
    levels = [av.read_wav(os.path.join(both.root, read_manifest(tests[c]).rows[0]["audio"]))[0]
              for c in ("both", "noisier audio 1", "noisier audio 2")]
    # The same recording at 0, -6, -12 dB: noisier versions are farther from the base one.
    assert 0 < np.abs(levels[1] - levels[0]).mean() < np.abs(levels[2] - levels[0]).mean()
    # The seen-speaker diagnostic: carl's even takes train, only his odd takes are tested; both folds' files kept.
    seen_train, seen_tests = av.fold_manifests(table, str(folder), "carl", seen_takes=True)
    seen = read_manifest(seen_train).rows
    carl_takes = sorted(r["take"] for r in table if r["speaker"] == "carl")
    assert len(seen) == 24 + sum(t % 2 == 0 for t in carl_takes) and {r["speaker"] for r in seen} == {"anna", "bert", "carl"}
    tested = read_manifest(seen_tests["both"]).rows
    assert len(tested) == sum(t % 2 == 1 for t in carl_takes) > 0 and {r["speaker"] for r in tested} == {"carl"}
    assert not {r["audio"] for r in seen} & {r["audio"] for r in tested} and os.path.isfile(train_path)
    with pytest.raises(ValueError, match=r"No recordings of speaker 'theo'"):
        av.fold_manifests(table, str(folder), "theo")


@pytest.mark.slow  # trains the benchmark's models: make test runs it
def test_benchmark_runs_end_to_end_and_writes_its_table(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setitem(av.SETTINGS["quick"], "audio_length", 2000)
    out = tmp_path / "results" / "av.md"
    code = av.main(["--data", str(synthetic_data), "--quick", "--folds", "anna", "--epochs", "1",
                    "--models", "image only", "audio only", "late + dropout",
                    "--work", str(tmp_path / "work"), "--out", str(out)])
    assert code in (0, 1)
    text = out.read_text()
    for needle in ("| model | both | image missing | audio missing | noisier audio 1 | noisier audio 2 | params | train s |",
                   "| image only |", "| late + dropout |", "one fold (test speaker: anna)", "Best fusion", "python benchmarks/av_digits.py"):
        assert needle in text
    assert (tmp_path / "results" / "av.json").is_file()


@pytest.mark.slow
def test_pretrained_fusions_start_from_the_single_models_encoders(synthetic_data, tmp_path, monkeypatch):
    import mbm_keras

    built = []
    build = mbm_keras.build_fusion_model

    def recording_build(**kwargs):
        model = build(**kwargs)
        encoders = {m: model.get_layer(f"{m}_encoder") for m in ("image", "audio") if kwargs.get(m)}
        built.append((model, {m: [w.copy() for w in e.get_weights()] for m, e in encoders.items()}))
        return model

    monkeypatch.setattr(mbm_keras, "build_fusion_model", recording_build)
    table, info = av.build_files(str(synthetic_data), str(tmp_path), verbose=False)
    settings = dict(av.SETTINGS["quick"], epochs=2, audio_length=2000)
    # Listed fusion first: the single models must still train first.
    results = av.run_fold(table, info["folder"], "anna", settings,
                          models=["concat + dropout", "image only", "audio only", "concat + dropout, from scratch"], verbose=0)
    assert list(results) == ["image only", "audio only", "concat + dropout", "concat + dropout, from scratch"]
    assert [results[n]["epochs"] for n in results] == [2, 2, 1, 2]
    (image_model, _), (audio_model, _), (_, pretrained), (_, scratch) = built
    trained = {"image": image_model.get_layer("image_encoder").get_weights(),
               "audio": audio_model.get_layer("audio_encoder").get_weights()}
    for m in ("image", "audio"):  # the fusion starts exactly where the single model ended; from scratch does not
        assert all(np.array_equal(a, b) for a, b in zip(pretrained[m], trained[m])), m
        assert not all(np.array_equal(a, b) for a, b in zip(scratch[m], trained[m])), m
    assert results["concat + dropout"]["seconds"] > results["image only"]["seconds"] + results["audio only"]["seconds"]
    with pytest.raises(ValueError, match=r"start from the encoders of \['image only', 'audio only'\]; include both"):
        av.run_fold(table, info["folder"], "anna", settings, models=["image only", "late + dropout"], verbose=0)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "fsdd").is_dir() or not (SHARED_DATA / "mnist").is_dir(),
                    reason=f"needs the FSDD recordings and MNIST images in {SHARED_DATA} (absent here)")
def test_on_real_data_fusion_beats_each_single_modality(tmp_path):
    # Fixed split: speakers george, jackson, nicolas, yweweler train; theo is tested.
    table, info = av.build_files(str(SHARED_DATA), str(tmp_path), verbose=False)
    settings = dict(av.SETTINGS["quick"], epochs=4)
    results = av.run_fold(table, info["folder"], "theo", settings,
                          models=["image only", "audio only", "late + dropout"], verbose=0)
    both = {name: r["accuracy"]["both"] for name, r in results.items()}
    assert min(both["image only"], both["audio only"]) > 0.2, both  # each modality alone carries some signal
    assert both["late + dropout"] > max(both["image only"], both["audio only"]) + 0.03, both
