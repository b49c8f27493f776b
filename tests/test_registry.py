import pytest

from mbm_keras import build_fusion_model, create_encoder, get_head, list_encoders, list_fusions, list_heads
from mbm_keras.registry import Registry


def test_wildcards_and_modality_filter():
    assert list_encoders(pattern="logmel_*") == ["logmel_cnn", "logmel_lstm", "logmel_tcn"]
    assert list_encoders("text", pattern="*lstm") == ["bilstm", "lstm"]
    assert list_heads() == ["linear", "sigmoid", "softmax"]
    assert list_fusions("l*") == ["late", "low_rank_tensor"]


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_fusion_model(image="resnet51", text="lstm")
    msg = str(e.value)
    assert "'resnet51'" in msg and "modality='image'" in msg
    for name in list_encoders("image"):
        assert name in msg


def test_encoder_of_another_modality_is_refused():
    with pytest.raises(ValueError, match=r"Unknown encoder 'resnet50' for modality='text'.*bilstm, cnn, gru, keras_hub, lstm"):
        build_fusion_model(text="resnet50")


def test_unknown_fusion_and_head_list_valid_names():
    with pytest.raises(ValueError, match=r"Unknown fusion 'sum'.*attention, concat, cross_attention, gated, late, low_rank_tensor, transformer"):
        build_fusion_model(image="small_cnn", text="cnn", fusion="sum", image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"Unknown head 'softmaxx'.*linear, sigmoid, softmax"):
        get_head("softmaxx")


def test_unknown_modality():
    with pytest.raises(ValueError, match=r"Unknown modality 'video'.*image, text, audio, tabular"):
        list_encoders("video")
    with pytest.raises(ValueError, match=r"Unknown modality 'video'"):
        create_encoder("small_cnn", "video", (32, 32, 3))


def test_registering_a_name_twice_is_an_error():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object)


def test_new_encoder_is_one_function_and_one_registration():
    # What a contributor writes in a new file: a builder with the common
    # signature and its registration. build_fusion_model then finds it by name.
    import keras

    from mbm_keras.encoders.base import ENCODERS, encoder_input, finish_encoder, register_encoder

    @register_encoder("test_mean_pool", modality="tabular", description="test only")
    def build(input_shape, *, weights=None, name="tabular_encoder"):
        inputs = encoder_input(input_shape, name)
        x = keras.layers.Dense(3, name="dense")(inputs)
        return finish_encoder(inputs, x, weights=weights, encoder="test_mean_pool", name=name)

    try:
        assert "test_mean_pool" in list_encoders("tabular")
        model = build_fusion_model(tabular="test_mean_pool", tabular_dim=4)
        assert model.get_layer("tabular_encoder").output.shape == (None, 3)
    finally:
        del ENCODERS._entries["test_mean_pool"], ENCODERS._meta["test_mean_pool"]
