"""Connected-digit transcription with a voice-dialing context, on real recordings.

Utterances are built from the Free Spoken Digit Dataset as TIDIGITS is: 3 to 7
digits of one speaker, joined with short random gaps, transcripts like "three
seven one". Speaker-independent: train on four speakers, test on the fifth.
Training clips carry white noise at a random SNR (clean, 10, 0 or -6 dB); the
test clips are scored clean, at 0 dB and at -6 dB.

The context is a voice-dialing list: five candidate numbers shown on screen,
one of them the one spoken, in random order ("three seven one , two nine ...").
Five ways, on the same test clips:

- no context: `build_transcription_model(vocab)` (a `logmel_tcn` CTC model);
- context: the same with `context="cnn"`, every audio frame attending to the
  list's tokens (trained with the list on 75% of the clips, empty on the rest),
  its audio path copied from the no-context model and frozen (`audio_from=`,
  what `train()` does; `--context-from-scratch` trains it from random weights);
- kept by validation: `train()`'s rule, the context model (with its list) when
  its CER on a fifth of the training utterances held out is at most the
  no-context model's, else the no-context model;
- context model, empty context: the same model given no list;
- closest candidate: the list's number closest (word edit distance) to the
  no-context transcript, a non-learned baseline;
- candidates scored: the list's number the no-context model finds likeliest
  (`transcription.choose_candidates`: CTC log-likelihood of each candidate,
  what `mbm-keras transcribe --candidates` does).

Digit error rate (word error rate over digit words, jiwer) and whole-utterance
accuracy, greedy decoding.

Usage:
    python benchmarks/transcription.py --data ../shared/data [--folds theo] [--epochs 30] [--per-speaker 400]

`--seen-speaker` is a diagnostic: the test speaker's other takes join training,
which shows how much of the error comes from the speaker being new.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from av_digits import list_recordings, read_wav  # noqa: E402

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 8000
SECONDS = 4.0
TRAIN_SNRS = (None, 10.0, 0.0, -6.0)
TEST_SNRS = (None, 0.0, -6.0)
CANDIDATES = 5
CONTEXT_LENGTH = CANDIDATES * 7 + CANDIDATES - 1
# Context tokens: 0 padding, 1 unknown, 2..11 the digit words, 12 the separator.
TOKEN = {w: i + 2 for i, w in enumerate(WORDS)}
TOKEN[","] = 12


def utterances(recordings, speaker, count, rng):
    """`count` (waveform, digits) of `speaker`: 3-7 of their recordings joined
    with 50-250 ms gaps, within SECONDS."""
    clips = {}
    for r in recordings:
        if r["speaker"] == speaker:
            samples, rate = read_wav(r["path"])
            if rate != RATE:
                raise ValueError(f"{r['path']}: {rate} Hz; the benchmark expects FSDD's {RATE} Hz")
            clips.setdefault(r["digit"], []).append(samples / max(1e-3, np.abs(samples).max()) * 0.5)
    out = []
    limit = int(SECONDS * RATE)
    while len(out) < count:
        digits = list(rng.integers(0, 10, int(rng.integers(3, 8))))
        parts, kept = [np.zeros(int(rng.integers(400, 2000)), np.float32)], []
        for d in digits:
            clip = clips[d][int(rng.integers(len(clips[d])))]
            gap = np.zeros(int(rng.integers(400, 2000)), np.float32)
            if sum(len(p) for p in parts) + len(clip) + len(gap) > limit:
                break
            parts += [clip, gap]
            kept.append(int(d))
        if len(kept) < 3:
            continue
        wave = np.concatenate(parts)[:limit]
        out.append((np.pad(wave, (0, limit - len(wave))).astype(np.float32), kept))
    return out


def noisy(wave, snr, rng):
    if snr is None:
        return wave + rng.normal(0, 1e-3, wave.shape).astype(np.float32)
    # The SNR of the speech: the noise level follows the speech's RMS, not the silence-padded clip's.
    speech = wave[np.abs(wave) > 1e-3]
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if len(speech) else 0.1
    return np.clip(wave + rng.normal(0, rms / 10 ** (snr / 20), wave.shape), -1, 1).astype(np.float32)


def text_of(digits):
    return " ".join(WORDS[d] for d in digits)


def context_list(digits, rng):
    """Five candidate numbers, the spoken one among them, as (text, token ids)."""
    numbers = [list(digits)]
    while len(numbers) < CANDIDATES:
        other = list(rng.integers(0, 10, int(rng.integers(3, 8))))
        if other != numbers[0]:
            numbers.append([int(d) for d in other])
    order = rng.permutation(CANDIDATES)
    numbers = [numbers[i] for i in order]
    words = " , ".join(text_of(n) for n in numbers).split()
    ids = np.zeros(CONTEXT_LENGTH, np.int32)
    ids[: len(words)] = [TOKEN[w] for w in words]
    return numbers, ids


def closest_candidate(hypothesis, numbers):
    import jiwer

    return min((text_of(n) for n in numbers), key=lambda t: jiwer.wer(t, hypothesis) if hypothesis else len(t))


def run_fold(recordings, speakers, test_speaker, args, verbose=1):
    import keras

    from mbm_keras.transcription import (
        Vocabulary,
        build_transcription_model,
        choose_candidates,
        decode,
        error_rates,
        pad_targets,
    )

    rng = np.random.default_rng(args.seed)
    train = [u for s in speakers if s != test_speaker for u in utterances(recordings, s, args.per_speaker, rng)]
    test_recordings = recordings
    if args.seen_speaker:  # even takes of the test speaker join training, odd takes build the test clips
        seen = [r for r in recordings if r["speaker"] == test_speaker and r["take"] % 2 == 0]
        test_recordings = [r for r in recordings if r["speaker"] == test_speaker and r["take"] % 2 == 1]
        train += utterances(seen, test_speaker, args.per_speaker, rng)
    test = utterances(test_recordings, test_speaker, args.test_count, rng)
    # Validation, as train() holds it out by default: every fifth training utterance, with its own lists.
    val = train[::5]
    train = [u for i, u in enumerate(train) if i % 5]
    train_texts = [text_of(d) for _, d in train]
    vocab = Vocabulary.fit(train_texts)
    x_train = np.stack([noisy(w, TRAIN_SNRS[i % len(TRAIN_SNRS)], rng) for i, (w, _) in enumerate(train)])
    y_train = pad_targets(train_texts, vocab)
    contexts = np.stack([context_list(d, rng)[1] for _, d in train])
    contexts[rng.random(len(train)) < 0.25] = 0  # an empty list on a quarter of the clips
    common = dict(audio_length=int(SECONDS * RATE), sample_rate=RATE, learning_rate=args.learning_rate,
                  audio_kwargs={"units": args.units, "time_stride": args.time_stride, "top_db": args.top_db})
    if args.spec_augment:
        common["audio_kwargs"]["spec_augment"] = {k: int(v) for k, v in
                                                  (pair.split("=") for pair in args.spec_augment.split(","))}
    results = {}
    models = {}
    ways = (("none", {}, {"audio": x_train}),
            ("context", {"context": "cnn", "context_vocab_size": 13, "context_length": CONTEXT_LENGTH,
                         "units": args.units}, {"audio": x_train, "context": contexts}))
    for name, kwargs, x in ways[:1] if args.no_context_model else ways:
        keras.utils.set_random_seed(args.seed)
        if name == "context" and not args.context_from_scratch:
            # The trained no-context model's audio path, frozen: only the context path learns.
            kwargs = {**kwargs, "audio_from": models["none"]}
        model = build_transcription_model(vocab, **common, **kwargs)
        start = time.time()
        model.fit(x, y_train, epochs=args.epochs, batch_size=32, verbose=verbose)
        if verbose:
            print(f"  {name}: trained in {time.time() - start:.0f} s", flush=True)
        models[name] = model
    kept = "none"
    if "context" in models:  # train()'s rule: the context model only where its validation CER is no worse
        x_val = np.stack([noisy(w, TRAIN_SNRS[i % len(TRAIN_SNRS)], rng) for i, (w, _) in enumerate(val)])
        val_contexts = np.stack([context_list(d, rng)[1] for _, d in val])
        val_contexts[rng.random(len(val)) < 0.25] = 0
        val_refs = [text_of(d) for _, d in val]
        cer = {n: error_rates(val_refs, decode(m.predict(x, verbose=0), vocab))["cer"]
               for n, m, x in (("none", models["none"], {"audio": x_val}),
                               ("context", models["context"], {"audio": x_val, "context": val_contexts}))}
        kept = "context" if cer["context"] <= cer["none"] else "none"
        if verbose:
            print(f"  validation CER: no context {cer['none']:.3f}, context {cer['context']:.3f} -> kept {kept}",
                  flush=True)
    lists = [context_list(d, rng) for _, d in test]
    refs = [text_of(d) for _, d in test]
    for snr in TEST_SNRS:
        noise_rng = np.random.default_rng(1000 + (0 if snr is None else int(snr) + 100))
        audio = np.stack([noisy(w, snr, noise_rng) for w, _ in test])
        log_probs = models["none"].predict({"audio": audio}, verbose=0)
        plain = decode(log_probs, vocab)
        if "context" in models:
            with_list = decode(models["context"].predict(
                {"audio": audio, "context": np.stack([ids for _, ids in lists])}, verbose=0), vocab)
            empty = decode(models["context"].predict(
                {"audio": audio, "context": np.zeros((len(test), CONTEXT_LENGTH), np.int32)}, verbose=0), vocab)
        else:  # --no-context-model: the columns repeat the no-context model
            with_list = empty = plain
        closest = [closest_candidate(h, numbers) for h, (numbers, _) in zip(plain, lists)]
        scored = choose_candidates(log_probs, [[text_of(n) for n in numbers] for numbers, _ in lists], vocab)
        key = "clean" if snr is None else f"{snr:g} dB"
        results[key] = {way: error_rates(refs, hyps) for way, hyps in
                        (("no context", plain), ("context", with_list), ("context, empty", empty),
                         ("kept by validation", with_list if kept == "context" else plain),
                         ("closest candidate", closest), ("candidates scored", scored))}
        if verbose:
            row = "  ".join(f"{w}: DER {s['wer'] * 100:.1f}% acc {s['exact'] * 100:.0f}%"
                            for w, s in results[key].items())
            print(f"  {test_speaker} {key}: {row}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the folder holding fsdd/, e.g. --data ../shared/data")
    parser.add_argument("--folds", nargs="+", help="test speakers, e.g. --folds theo (default: every speaker)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per model, e.g. --epochs 30")
    parser.add_argument("--per-speaker", type=int, default=300, help="training utterances per speaker")
    parser.add_argument("--test-count", type=int, default=200, help="test utterances of the held-out speaker")
    parser.add_argument("--units", type=int, default=96, help="encoder and attention width")
    parser.add_argument("--time-stride", type=int, default=4, help="spectrogram frames per output frame (10 ms each)")
    parser.add_argument("--spec-augment", default="", help="logmel_tcn's SpecAugment masks as name=value pairs, "
                        "e.g. --spec-augment time_masks=4,max_time=20 (default: the encoder's)")
    parser.add_argument("--top-db", type=float, default=80.0, help="logmel_tcn's dB range below each clip's peak")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam's step size")
    parser.add_argument("--no-context-model", action="store_true",
                        help="train only the no-context model (a quicker look at the audio model)")
    parser.add_argument("--context-from-plain", action="store_true",
                        help="(the default now, kept for old commands) the context model starts from the trained "
                             "no-context model's audio path, frozen (build_transcription_model(audio_from=...)), "
                             "as train() does")
    parser.add_argument("--context-from-scratch", action="store_true",
                        help="the context model trains its audio path from random weights (the earlier default)")
    parser.add_argument("--seen-speaker", action="store_true",
                        help="a diagnostic, not speaker-independent: the test speaker's even takes join the "
                             "training clips and only their odd takes build the test clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the utterances and the models")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "transcription.md"), help="the results table")
    args = parser.parse_args(argv)
    recordings = list_recordings(os.path.join(args.data, "fsdd"))
    speakers = sorted({r["speaker"] for r in recordings})
    folds = args.folds or speakers
    per_fold = {}
    for speaker in folds:
        print(f"Fold: test speaker {speaker}", flush=True)
        per_fold[speaker] = run_fold(recordings, speakers, speaker, args)
    ways = ("no context", "context", "context, empty", "kept by validation", "closest candidate", "candidates scored")
    lines = [f"Digit error rate / utterance accuracy (%), test speaker(s) {', '.join(folds)}"
             f"{' (SEEN in training: other takes of the same speaker)' if args.seen_speaker else ''}, "
             f"{args.epochs} epochs, {args.per_speaker} training utterances per speaker, greedy decoding "
             f"(`python benchmarks/transcription.py {' '.join(argv if argv is not None else sys.argv[1:])}`)", "",
             "| condition | " + " | ".join(ways) + " |", "| --- |" + " --- |" * len(ways)]
    for key in ("clean",) + tuple(f"{s:g} dB" for s in TEST_SNRS if s is not None):
        cells = []
        for way in ways:
            der = [per_fold[f][key][way]["wer"] * 100 for f in folds]
            acc = [per_fold[f][key][way]["exact"] * 100 for f in folds]
            cells.append(f"{np.mean(der):.1f} ± {np.std(der):.1f} / {np.mean(acc):.0f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    means = {key: {w: np.mean([per_fold[f][key][w]["wer"] for f in folds]) for w in ways}
             for key in ("clean", "-6 dB")}
    checks = [
        ("clean digit error rate without context < 10%", means["clean"]["no context"] < 0.10),
        ("at -6 dB, context error <= half the no-context error",
         means["-6 dB"]["context"] <= 0.5 * means["-6 dB"]["no context"]),
        ("empty context within 1 point of no context (clean)",
         abs(means["clean"]["context, empty"] - means["clean"]["no context"]) <= 0.01),
    ]
    every = [k for k in ("clean",) + tuple(f"{s:g} dB" for s in TEST_SNRS if s is not None)]
    kept_ok = all(np.mean([per_fold[f][k]["kept by validation"]["wer"] for f in folds])
                  <= np.mean([per_fold[f][k]["no context"]["wer"] for f in folds]) + 1e-9 for k in every)
    checks.append(("the kept model (context with its list, or none) at most the no-context error at every noise level",
                   kept_ok))
    lines += [""] + [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]
    scored = np.mean([per_fold[f]["-6 dB"]["candidates scored"]["wer"] for f in folds])
    lines.append(f"- not a target (the list scored by CTC likelihood, `choose_candidates`): at -6 dB "
                 f"{scored * 100:.1f}% vs {means['-6 dB']['no context'] * 100:.1f}% without the list "
                 f"({'at most' if scored <= 0.5 * means['-6 dB']['no context'] else 'more than'} half)")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("# Transcription benchmark\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
