"""Image decoding, resizing and training-time augmentation in tf.data."""

import tensorflow as tf

RESIZE_MODES = ("stretch", "crop", "pad")
# File signatures of the formats tf.io.decode_image reads.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


def decode_image(contents, size, resize="stretch"):
    """JPEG/PNG/BMP/GIF (first frame) bytes -> float32 `(height, width, 3)` RGB in [0, 255].

    Args:
        contents: encoded image bytes (scalar string tensor).
        size: `(height, width)`.
        resize: "stretch" (ignore aspect), "crop" (keep aspect, centre crop) or
            "pad" (keep aspect, pad with black).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    height, width = size
    image = tf.cond(
        tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff"),
        lambda: _decode_jpeg_near(contents, height, width),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    image = tf.cast(image, tf.float32)
    if resize == "pad":
        image = tf.image.resize_with_pad(image, height, width)
    elif resize == "crop":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.reduce_max(tf.constant([height, width], tf.float32) / shape)
        scaled = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        image = tf.image.resize(image, scaled)
        image = tf.image.resize_with_crop_or_pad(image, height, width)
    else:
        image = tf.image.resize(image, (height, width))
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((height, width, 3))
    return image


def _decode_jpeg_near(contents, height, width):
    """Decodes a JPEG at 1/2, 1/4 or 1/8 scale when it stays at least as large
    as the target: libjpeg's DCT-domain downscaling skips most of the work on
    large photos (Pillow's `Image.draft` does the same)."""
    shape = tf.image.extract_jpeg_shape(contents)
    fit = tf.minimum(shape[0] // height, shape[1] // width)
    branches = {r: (lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r)) for r in (1, 2, 4, 8)}
    return tf.case(
        [(fit >= 8, branches[8]), (fit >= 4, branches[4]), (fit >= 2, branches[2])],
        default=branches[1],
        exclusive=False,
    )


def augment_image(image, seed, flip=True, crop=0.1, color=0.1):
    """Random flip, crop-and-resize and brightness/contrast, from a stateless seed.

    Args:
        image: float32 `(height, width, 3)` in [0, 255].
        seed: int tensor of shape (2,).
        flip: random left-right flip.
        crop: crop away up to this fraction of each side, then resize back.
        color: relative brightness/contrast jitter.
    """
    height, width = image.shape[0], image.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if crop:
        frac = tf.random.stateless_uniform([], seeds[1], 1.0 - crop, 1.0)
        crop_h = tf.cast(tf.cast(height, tf.float32) * frac, tf.int32)
        crop_w = tf.cast(tf.cast(width, tf.float32) * frac, tf.int32)
        image = tf.image.stateless_random_crop(image, tf.stack([crop_h, crop_w, 3]), seeds[2])
        image = tf.image.resize(image, (height, width))
    if color:
        image = tf.image.stateless_random_brightness(image, 255.0 * color, seeds[3])
        mean = tf.reduce_mean(image)
        factor = tf.random.stateless_uniform([], seeds[3] + 1, 1.0 - color, 1.0 + color)
        image = (image - mean) * factor + mean
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((height, width, 3))
    return image
