"""Images: JPEG/PNG/GIF/BMP files, decoded and resized to float32 RGB in [0, 255]."""

import numpy as np

from mbm_keras.modalities.base import Modality, positive_int, register_modality, shape_of

RESIZE_MODES = ("stretch", "crop", "pad")
# Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): far above any
# camera photo, far below the 16000x16000 PNGs that take gigabytes to decode.
MAX_IMAGE_PIXELS = 89_478_485


@register_modality
class Image(Modality):
    """An image file per row; the model input is float32 `(height, width, 3)` in [0, 255]."""

    name = "image"
    description = "JPEG/PNG/GIF/BMP files -> float32 RGB (height, width, 3) in [0, 255]"
    file_based = True
    WEIGHTS_ARGUMENT = True
    OPTIONS = {
        "image_size": ((224, 224), lambda v: shape_of(v, 2) is not None, "a pair of positive ints [height, width]"),
        "resize": ("stretch", lambda v: v in RESIZE_MODES, f"one of {RESIZE_MODES}"),
        "max_image_pixels": (MAX_IMAGE_PIXELS, positive_int, "a positive int"),
    }
    # image_preset reaches the encoders that take a `preset` (keras_hub_image), as image_kwargs={"preset": ...} does.
    MODEL_OPTIONS = {"image_shape": (224, 224, 3), "image_preset": None}
    TINY = {"image_shape": (32, 32, 3)}
    ZOO = {"image_shape": (224, 224, 3)}
    EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
    STARTER = "small_cnn"

    def __init__(self, feature, column, options):
        super().__init__(feature, column, options)
        self.options["image_size"] = tuple(int(v) for v in self.options["image_size"])

    def model_options(self):
        return {"image_shape": (*self.options["image_size"], 3)}

    @classmethod
    def check_model_options(cls, options):
        shape = shape_of(options["image_shape"], 3)
        if shape is None:
            raise ValueError(f"image_shape must be (height, width, channels). Received: image_shape={options['image_shape']!r}")
        preset = options.get("image_preset")
        if preset is not None and not (isinstance(preset, str) and preset):
            raise ValueError(f"image_preset must be a KerasHub preset folder or name, or None. Received: {preset!r}")
        return {"image_shape": shape, "image_preset": preset}

    @classmethod
    def input_spec(cls, options):
        return options["image_shape"], "float32"

    @classmethod
    def encoder_kwargs(cls, options):
        # `preset` goes only to builders that name it (see encoders.base.offered_kwargs).
        return {"preset": options["image_preset"]} if options.get("image_preset") else {}

    def check_file(self, f):
        from mbm_keras.codecs.image import IMAGE_MAGIC, file_header_size

        if not f.read(8).startswith(IMAGE_MAGIC):
            return "not a JPEG, PNG, BMP or GIF file"
        size = file_header_size(f)
        limit = self.options["max_image_pixels"]
        if size is not None and size[0] * size[1] > limit:
            return (f"image of {size[1]}x{size[0]} pixels is above the limit max_image_pixels={limit:,} "
                    f"(data.preprocessing.max_image_pixels)")
        return None

    def decoded_spec(self):
        import tensorflow as tf

        return tf.TensorSpec((*self.options["image_size"], 3), tf.float32)

    def decode(self, raw, header_checked=False, serving=False):
        from mbm_keras.codecs.image import decode_image

        return decode_image(raw, self.options["image_size"], self.options["resize"],
                            max_pixels=self.options["max_image_pixels"])

    def finish(self, x, seed=None, augment=None):
        if seed is None or not augment:
            return x
        from mbm_keras.codecs.image import augment_image

        return augment_image(x, seed, **(augment if isinstance(augment, dict) else {}))

    def sidecar(self):
        return {"size": list(self.options["image_size"]), "resize": self.options["resize"], "channels": "RGB",
                "range": [0, 255], "note": "decoded pixels as float32; scaling happens in the model"}

    @staticmethod
    def perturb(x, level, rng):
        """Gaussian pixel noise of std `level * 128`."""
        return np.clip(x + rng.normal(0, 128 * level, x.shape), 0, 255).astype(x.dtype)
