"""The TF1 name mapping, derived from structure, checked against the published list."""
import collections

from metaseg.models import EfficientLab
from metaseg.models.tf1_names import ENCODER, FINAL, tf1_variables


def test_published_names_order_shapes_and_trainability(published_model, tf1_rows):
    ours = [(v.name, list(v.variable.shape), v.variable.trainable)
            for v in tf1_variables(published_model)]
    assert len(tf1_rows) == 247
    assert ours == tf1_rows  # every name, in creation order, with its shape and flag


def test_every_weight_mapped_once(published_model):
    named = tf1_variables(published_model)
    assert len({id(v.variable) for v in named}) == len(published_model.weights)
    assert [v.name for v in named if v.section == FINAL] == [
        "decode/final_layer_weights/kernel", "decode/final_layer_weights/bias"]


def test_b3_and_other_rsd_choices_map():
    m = EfficientLab(backbone="efficientnet-b3", rsd=(1, 3))
    named = {v.name: list(v.variable.shape) for v in tf1_variables(m)}
    assert len(named) == len(m.weights)
    blocks = {n.split("/")[1] for n in named if n.startswith("efficientnet-b3/blocks_")}
    assert blocks == {f"blocks_{i}" for i in range(18)}
    assert named["efficientnet-b3/stem/conv2d/kernel"] == [3, 3, 3, 40]
    # block 1 (Keras block1b) has no expansion: depthwise, bn, se, projection conv2d
    assert named["efficientnet-b3/blocks_1/conv2d/kernel"] == [1, 1, 24, 24]
    assert "efficientnet-b3/blocks_1/tpu_batch_normalization_2/gamma" not in named
    assert named["efficientnet-b3/blocks_17/conv2d_1/kernel"] == [1, 1, 816, 136]
    # RSD of reduction r lives in scope decode_skip_connections_<r-1>; D = 136
    assert named["decode/decode_skip_connections_2/conv2d/kernel"] == [1, 1, 136 + 48, 136]
    assert named["decode/decode_skip_connections_0/conv2d_2/kernel"] == [3, 3, 136 * 2 + 160,
                                                                         136]


def test_optional_blocks_follow_the_per_scope_counter():
    m = EfficientLab(rsd=(4,), spatial_pyramid_pooling=True, skip_decoding=True)
    named = {v.name: list(v.variable.shape) for v in tf1_variables(m)}
    aspp = "decode/spatial_pyramid_pooling"
    assert named[f"{aspp}/branch_1/conv2d/kernel"] == [3, 3, 112, 112]
    assert named[f"{aspp}/conv2d/kernel"] == [1, 1, 336, 112]
    skip = "decode/decode_skip_connections"
    assert named[f"{skip}/conv2d/kernel"] == [1, 1, 24, 56]
    assert named[f"{skip}/depthwise_conv2d_1/depthwise_kernel"] == [3, 3, 168, 1]
    assert named[f"{skip}/batch_normalization_4/moving_variance"] == [168]
    # the 168-wide map is projected first, so the projection takes conv2d, the fuse conv2d_3
    rsd = "decode/decode_skip_connections_3"
    assert named[f"{rsd}/conv2d/kernel"] == [1, 1, 168, 112]
    assert named[f"{rsd}/conv2d_3/kernel"] == [3, 3, 112 + 112 + 168 + 112, 112]
    counts = collections.Counter(v.section for v in tf1_variables(m))
    assert counts[ENCODER] == 209
