"""benchmarks/fusion_stress.py: each variant's rows say what the variant claims (no data needed)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # fusion_stress imports av_digits beside it
spec = importlib.util.spec_from_file_location("fusion_stress", ROOT / "benchmarks" / "fusion_stress.py")
stress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stress)

SPEAKERS = ("ann", "bob", "cid", "dee", "eve")


def table():
    """10 takes of each digit by each speaker; an image's file name tells its digit."""
    return [{"digit": d, "speaker": s, "take": t, "audio_0": f"audio/{d}_{s}_{t}.wav",
             "image_train": f"images/train-{d}-{s}{t}.png", "image_test": f"images/test-{d}-{s}{t}.png"}
            for s in SPEAKERS for d in range(10) for t in range(10)]


def digit_of(image):
    return int(image.split("-")[1])


def test_complementary_rows_pair_each_clip_with_its_own_digit():
    train, test = stress.variant_rows(table(), "complementary", "eve")
    assert len(train) == 400 and len(test) == 100
    assert {r["speaker"] for r in test} == {"eve"} and "eve" not in {r["speaker"] for r in train}
    assert all(digit_of(r["image"]) == int(r["label"]) for r in train + test)
    assert all(r["image"].startswith("images/train-") for r in train) and all(
        r["image"].startswith("images/test-") for r in test)  # disjoint image pools


def test_a_useless_image_carries_no_label():
    train, _ = stress.variant_rows(table(), "useless image", "eve")
    same = sum(digit_of(r["image"]) == int(r["label"]) for r in train) / len(train)
    assert same < 0.2  # chance is 0.1


def test_a_spurious_image_follows_each_speakers_own_shuffle():
    train, test = stress.variant_rows(table(), "spurious image", "eve")
    mappings = {}
    for r in train + test:
        mappings.setdefault(r["speaker"], {}).setdefault(int(r["label"]), set()).add(digit_of(r["image"]))
    for speaker, mapping in mappings.items():  # within a speaker the image tells the label exactly
        assert all(len(images) == 1 for images in mapping.values()), speaker
        assert sorted(next(iter(v)) for v in mapping.values()) == list(range(10))  # a permutation
    shuffles = {s: tuple(next(iter(m[d])) for d in range(10)) for s, m in mappings.items()}
    assert len(set(shuffles.values())) == len(SPEAKERS)  # but not across speakers


def test_few_rows_and_many_classes():
    train, test = stress.variant_rows(table(), "few rows", "eve")
    assert len(train) == stress.FEW_ROWS and len(test) == 100
    train, _ = stress.variant_rows(table(), "many classes", "eve")
    assert all(len(r["label"]) == 2 and r["label"][1] == str(digit_of(r["image"])) for r in train)
    assert all(r["label"][0] == r["audio"].split("/")[1][0] for r in train)  # the spoken digit, then the written
    assert len({r["label"] for r in train}) > 90


def test_the_check_compares_the_default_with_the_best_single_model_within_the_spread():
    summary = {"default": {"mean": 0.50, "std": 0.02}, "image only": {"mean": 0.52, "std": 0.03},
               "audio only": {"mean": 0.30, "std": 0.01}}
    check = stress.check(summary)
    assert check["best_single"] == "image only" and check["margin"] == pytest.approx(-0.02) and check["ok"]
    summary["default"]["mean"] = 0.45
    assert not stress.check(summary)["ok"]
