"""Tiny random-weight KerasHub presets, saved to a folder and loaded by path:
no download anywhere in the suite."""

import os

WORDS = ("the a an and of to is on in it red blue green crimson navy thing number bird cat dog sat mat "
         "run sit quick brown fox over lazy café naïve 猫 狗 一 只 x ray e mail").split()
PIECES = ["##s", "##ing", "##er", "##ed", "##ly", "##a", "##e", "##o", "##n", "##r", "##t", "##y", "##4", "##2"]


def tiny_bert_preset(folder, vocabulary_size=50, max_sequence_length=16, hidden_dim=16):
    """A 2-layer BERT (random weights) and its WordPiece tokenizer, written as a
    KerasHub preset folder; returns the folder. The vocabulary holds the
    special tokens, digits, a few words and suffixes, padded with [unused]."""
    import keras_hub

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocabulary = special + [str(d) for d in range(10)] + list(WORDS) + PIECES + [".", ",", "!"]
    vocabulary = vocabulary[:vocabulary_size]
    vocabulary += [f"[unused{i}]" for i in range(vocabulary_size - len(vocabulary))]
    backbone = keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=2, num_heads=2,
                                             hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim,
                                             max_sequence_length=max_sequence_length, name="bert_backbone")
    os.makedirs(folder, exist_ok=True)
    backbone.save_to_preset(folder)
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(folder)
    return folder


def tiny_resnet_preset(folder):
    """A one-block ResNet (random weights) with an image converter that
    standardizes per channel, written as a KerasHub vision preset folder."""
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=(None, None, 3), name="res_net_backbone")
    os.makedirs(folder, exist_ok=True)
    backbone.save_to_preset(folder)
    keras_hub.layers.ResNetImageConverter(image_size=(224, 224), scale=[1 / 58.4, 1 / 57.1, 1 / 57.4],
                                          offset=[-2.12, -2.04, -1.80]).save_to_preset(folder)
    return folder
