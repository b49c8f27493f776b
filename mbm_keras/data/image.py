"""Image decoding, resizing and training-time augmentation in tf.data."""

import struct

import tensorflow as tf

RESIZE_MODES = ("stretch", "crop", "pad")
# File signatures of the formats tf.io.decode_image reads.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


def header_size(contents):
    """`(height, width)` (int64) from an encoded image's header, without decoding
    it: PNG, GIF and BMP from fixed offsets, JPEG from its frame marker;
    (0, 0) for other bytes (the decoder then names the format problem)."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(contents, 0, 32), "\0" * 32]), 0, 32)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def big(i, n):
        return sum(b[i + k] * 256 ** (n - 1 - k) for k in range(n))

    def little(i, n):
        return sum(b[i + k] * 256**k for k in range(n))

    def bmp_height():
        h = little(22, 4)
        return tf.where(h >= 2**31, 2**32 - h, h)  # negative height: a top-down bitmap

    magic3 = tf.strings.substr(contents, 0, 3)
    zero = tf.constant(0, tf.int64)
    return tf.case(
        [
            (tf.equal(magic3, b"\xff\xd8\xff"), lambda: tuple(tf.unstack(tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64)))),
            (tf.equal(tf.strings.substr(contents, 0, 8), b"\x89PNG\r\n\x1a\n")
             & tf.equal(tf.strings.substr(contents, 12, 4), b"IHDR"), lambda: (big(20, 4), big(16, 4))),
            (tf.equal(magic3, b"GIF"), lambda: (little(8, 2), little(6, 2))),
            (tf.equal(tf.strings.substr(contents, 0, 2), b"BM"), lambda: (bmp_height(), little(18, 4))),
        ],
        default=lambda: (zero, zero),
    )


def check_pixels(contents, max_pixels):
    """Asserts that the image in `contents` has at most `max_pixels` pixels,
    from its header, before anything is decoded."""
    height, width = header_size(contents)
    message = tf.strings.join([
        "image of ", tf.strings.as_string(width), "x", tf.strings.as_string(height),
        f" pixels is above the limit max_image_pixels={max_pixels:,} (data.preprocessing.max_image_pixels)",
    ])
    return tf.debugging.Assert(height * width <= max_pixels, [message])


def file_header_size(path):
    """`(height, width)` of an image file from its header, read on the host
    (what `header_size` reads in-graph); None for formats it does not know."""
    with open(path, "rb") as f:
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
    if max_pixels is not None:
        with tf.control_dependencies([check_pixels(contents, max_pixels)]):
            contents = tf.identity(contents)
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
