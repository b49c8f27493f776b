"""Image decoding, resizing and training-time augmentation in tf.data."""

import contextlib
import os
import struct

import tensorflow as tf

from mbm_keras.codecs.asserts import check

RESIZE_MODES = ("stretch", "crop", "pad")
# File signatures of the formats tf.io.decode_image reads.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


PIXEL_LIMIT_NOTE = "pixels is above the limit max_image_pixels={:,} (data.preprocessing.max_image_pixels)"


def _header_size(contents):
    """`(height, width)` (int64) of a PNG, GIF or BMP from its header, without
    decoding it and without branching (one op per step: this runs for every
    example); (0, 0) for other bytes. JPEG sizes come from its frame marker,
    read where the JPEG is decoded."""
    b = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, 0, 32), tf.uint8, fixed_length=32), tf.int64)
    weights = tf.constant([256**3, 256**2, 256, 1], tf.int64)
    png = tf.stack([tf.reduce_sum(b[20:24] * weights), tf.reduce_sum(b[16:20] * weights)])
    gif = tf.stack([b[8] + 256 * b[9], b[6] + 256 * b[7]])
    le = tf.reverse(weights, [0])
    bmp_h = tf.reduce_sum(b[22:26] * le)
    bmp = tf.stack([tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h), tf.reduce_sum(b[18:22] * le)])
    is_png = tf.equal(tf.strings.substr(contents, 0, 8), b"\x89PNG\r\n\x1a\n") & tf.equal(
        tf.strings.substr(contents, 12, 4), b"IHDR")
    is_gif = tf.equal(tf.strings.substr(contents, 0, 3), b"GIF")
    is_bmp = tf.equal(tf.strings.substr(contents, 0, 2), b"BM")
    size = tf.where(is_png, png, tf.where(is_gif, gif, tf.where(is_bmp, bmp, tf.zeros([2], tf.int64))))
    return size[0], size[1]


def _assert_pixels(height, width, max_pixels):
    """The pixel-limit assertion; its message is formatted only when it fails."""
    height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
    return check(height * width <= max_pixels, ["image of ", width, "x", height, " " + PIXEL_LIMIT_NOTE.format(max_pixels)])


def file_header_size(path):
    """`(height, width)` of an image file (a path or a binary file object) from
    its header, read on the host (what `_header_size` and the JPEG decoder read
    in-graph); None for formats it does not know."""
    with (open(path, "rb") if isinstance(path, (str, bytes, os.PathLike)) else contextlib.nullcontext(path)) as f:
        f.seek(0)
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        if head.startswith(b"GIF") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return height, width
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(height), width
        if head.startswith(b"\xff\xd8"):  # walk the segments to the frame header
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                    continue
                length = f.read(2)
                if len(length) < 2:
                    return None
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    frame = f.read(5)
                    return struct.unpack(">HH", frame[1:5]) if len(frame) == 5 else None
                f.seek(struct.unpack(">H", length)[0] - 2, 1)
    return None


def decode_image(contents, size, resize="stretch", max_pixels=None):
    """JPEG/PNG/BMP/GIF (first frame) bytes -> float32 `(height, width, 3)` RGB in [0, 255].

    Args:
        contents: encoded image bytes (scalar string tensor).
        size: `(height, width)`.
        resize: "stretch" (ignore aspect), "crop" (keep aspect, centre crop) or
            "pad" (keep aspect, pad with black).
        max_pixels: refuse (InvalidArgumentError naming the size) images whose
            header declares more pixels, before decoding them.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    height, width = size

    def other():
        if max_pixels is None:
            return tf.io.decode_image(contents, channels=3, expand_animations=False)
        with tf.control_dependencies([_assert_pixels(*_header_size(contents), max_pixels)]):
            return tf.io.decode_image(tf.identity(contents), channels=3, expand_animations=False)

    image = tf.cond(
        tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff"),
        lambda: _decode_jpeg_near(contents, height, width, max_pixels),
        other,
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


def _decode_jpeg_near(contents, height, width, max_pixels=None):
    """Decodes a JPEG at 1/2, 1/4 or 1/8 scale when it stays at least as large
    as the target: libjpeg's DCT-domain downscaling skips most of the work on
    large photos (Pillow's `Image.draft` does the same)."""
    shape = tf.image.extract_jpeg_shape(contents)
    if max_pixels is not None:
        with tf.control_dependencies([_assert_pixels(shape[0], shape[1], max_pixels)]):
            shape = tf.identity(shape)
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
