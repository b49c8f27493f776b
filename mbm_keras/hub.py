"""KerasHub presets, found offline: a local preset folder, or a named preset in
the user's KerasHub (kagglehub) cache. Nothing is downloaded at run time: a
named preset that is not cached fails at once, naming the preset, the cache
folder and how to place a downloaded one.

Shared by the text tokenizer (`data/text.py`, the preset's own preprocessor)
and the `keras_hub` encoders, so both read the same folder.
"""

import difflib
import json
import os

# What each kind of zoo encoder needs from a preset's config.json.
KINDS = ("text", "image")


class PresetError(ValueError):
    """A KerasHub preset that cannot be used (unknown, not cached, wrong kind).

    Examples:
        >>> raise PresetError("Unknown KerasHub preset 'bert_tiny'. Close matches: bert_tiny_en_uncased.")
    """


def _known_presets():
    import keras_hub

    return keras_hub.models.Backbone.presets


def cache_folder():
    """The folder KerasHub downloads named presets to (kagglehub's cache;
    `$KAGGLEHUB_CACHE` moves it).

    Examples:
        >>> cache_folder()
        '/home/me/.cache/kagglehub'
    """
    from kagglehub.config import get_cache_folder

    return get_cache_folder()


def _cached_path(name):
    """The cached folder of a named preset, or None (and where it would be)."""
    from kagglehub.cache import get_cached_path
    from kagglehub.handle import parse_model_handle

    handle = _known_presets()[name]["kaggle_handle"].removeprefix("kaggle://")
    path = get_cached_path(parse_model_handle(handle))
    return (path if os.path.isfile(os.path.join(path, "config.json")) else None), path


def resolve_preset(preset, kind="text"):
    """The local folder of a KerasHub preset, checked for `kind`.

    Args:
        preset: a preset folder (written by `save_to_preset` or downloaded
            and unpacked), or a KerasHub preset name
            (`keras_hub.models.Backbone.presets`) found in the cache.
        kind: "text" (a backbone with a tokenizer) or "image".

    Returns:
        The folder's absolute path.

    Raises:
        PresetError: an unknown name (with close matches), a named preset not
            in the cache (no download), a folder that is not a preset, or a
            preset of another kind.

    Examples:
        >>> resolve_preset("~/presets/bert_tiny_en_uncased")
        '/home/me/presets/bert_tiny_en_uncased'
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    if not isinstance(preset, str) or not preset:
        raise PresetError(f"A KerasHub preset is a preset name or a folder. Received: preset={preset!r}")
    folder = os.path.abspath(os.path.expanduser(preset))
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise PresetError(f"KerasHub preset folder {folder} has no config.json: it is not a preset folder "
                              "(write one with backbone.save_to_preset(folder) and tokenizer.save_to_preset(folder))")
    elif "/" in preset or os.sep in preset or preset.startswith((".", "~")):
        raise PresetError(f"KerasHub preset folder not found: {folder}")
    else:
        known = _known_presets()
        if preset not in known:
            close = difflib.get_close_matches(preset, list(known), n=5, cutoff=0.6)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise PresetError(f"Unknown KerasHub preset {preset!r}.{hint} Or give a preset folder.")
        cached, expected = _cached_path(preset)
        fill = (f"On a machine with network access run `keras_hub.models.TextClassifier.from_preset({preset!r}, "
                f"num_classes=2)` (text) or `keras_hub.models.ImageClassifier.from_preset({preset!r}, num_classes=2)` "
                f"(vision), which fills the cache with the backbone and its preprocessing, then copy the folder "
                f"{expected} to the same place here; or unpack the preset anywhere and give its folder as the preset.")
        if cached is None:
            raise PresetError(f"KerasHub preset {preset!r} is not in the cache ({cache_folder()}) and mbm_keras does "
                              f"not download at run time. {fill}")
        if kind == "text" and not os.path.isfile(os.path.join(cached, "tokenizer.json")):
            raise PresetError(f"The cache holds only the backbone of KerasHub preset {preset!r} ({cached}: no "
                              f"tokenizer.json), and a text encoder needs its tokenizer too. {fill}")
        folder = cached
    _check_kind(folder, preset, kind)
    return folder


def _check_kind(folder, preset, kind):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        backbone = json.load(f).get("class_name", "?")
    has_tokenizer = os.path.isfile(os.path.join(folder, "tokenizer.json"))
    has_images = os.path.isfile(os.path.join(folder, "image_converter.json")) or "image_shape" in _config(folder)
    if kind == "text" and not has_tokenizer:
        what = "a vision backbone" if has_images else "a backbone without a tokenizer"
        raise PresetError(f"KerasHub preset {preset!r} ({backbone}) is {what}, not a text one: a text encoder needs "
                          f"a preset with a tokenizer (tokenizer.json in {folder})")
    if kind == "image" and (has_tokenizer or not has_images):
        raise PresetError(f"KerasHub preset {preset!r} ({backbone}) is not a vision backbone: an image encoder needs "
                          f"a preset that takes images (image_shape in {folder}/config.json)")


def _config(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return json.load(f).get("config", {})


def load_backbone(preset, kind="text", load_weights=True):
    """The `keras_hub.models.Backbone` of a preset (offline, see `resolve_preset`).

    Args:
        preset: a preset folder or a cached preset name.
        kind: "text" or "image".
        load_weights: False builds the architecture with random weights.

    Examples:
        >>> backbone = load_backbone("~/presets/bert_tiny_en_uncased")
    """
    import keras_hub

    folder = resolve_preset(preset, kind)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        name = json.load(f).get("config", {}).get("name") or "backbone"
    # Named as in the preset ("bert_backbone"), not uniquified by other models built in the same process.
    return keras_hub.models.Backbone.from_preset(folder, load_weights=load_weights, name=name)


def load_text_preprocessor(preset, sequence_length):
    """The preset's own text preprocessor (tokenizer, start/end tokens,
    padding to `sequence_length`), runnable in the data pipeline and a SavedModel.

    Args:
        preset: a preset folder or a cached preset name.
        sequence_length: ids per text, special tokens included.

    Examples:
        >>> pre = load_text_preprocessor("~/presets/bert_tiny_en_uncased", 16)
        >>> pre(["a red bird"])["token_ids"].shape
        TensorShape([1, 16])
    """
    import keras_hub

    folder = resolve_preset(preset, "text")
    limit = _config(folder).get("max_sequence_length")
    if limit is not None and sequence_length > limit:
        raise PresetError(f"text_length={sequence_length} is longer than preset {preset!r}'s max_sequence_length="
                          f"{limit}: set data.preprocessing.text_length to at most {limit}")
    try:
        return keras_hub.models.TextClassifierPreprocessor.from_preset(folder, sequence_length=sequence_length)
    except ValueError as e:
        raise PresetError(f"KerasHub preset {preset!r} has no text preprocessor KerasHub knows ({e})") from None
