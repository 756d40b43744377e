"""Frame protocol round trips and the ONNX layer-range splitter."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from elasticdf_segment import split, testmodels
from elasticdf_segment.framing import KIND_ERROR, Frame, FramingError, encode, read_frame


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int8", "int64", "float16"])
def test_tensor_round_trip(dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    stream = io.BytesIO(encode(Frame.of_tensor(2**40 + 5, array)) + encode(Frame.error(9, "segment 1: boom")))
    first, second = read_frame(stream), read_frame(stream)
    assert first.request_id == 2**40 + 5 and first.tensor.dtype == array.dtype
    assert np.array_equal(first.tensor, array)
    assert second.kind == KIND_ERROR and second.request_id == 9 and second.message == "segment 1: boom"
    assert read_frame(stream) is None


def test_garbage_and_truncation_are_errors():
    with pytest.raises(FramingError, match="bad magic"):
        read_frame(io.BytesIO(b"GET / HTTP/1.1\r\n\r\n12345"))
    data = encode(Frame.of_tensor(1, np.zeros(10, np.float32)))
    with pytest.raises(ConnectionError):
        read_frame(io.BytesIO(data[:-3]))


@pytest.mark.parametrize("make,ranges", [(testmodels.plain_cnn, [[0, 2], [3, 5]]),
                                         (testmodels.residual_cnn, [[0, 3], [4, 6], [7, 8]])])
def test_split_is_bit_exact(make, ranges):
    model = make(seed=11)
    full = ort.InferenceSession(model.SerializeToString())
    parts = [ort.InferenceSession(m.SerializeToString()) for m in split.split(model, ranges)]
    for frame in testmodels.random_frames(5):
        tensor = frame
        for part in parts:
            tensor = part.run(None, {part.get_inputs()[0].name: tensor})[0]
        assert np.array_equal(tensor, full.run(None, {"x": frame})[0])


def test_cut_inside_a_residual_block_is_refused():
    with pytest.raises(ValueError, match="one input and one output"):
        split.cut(testmodels.residual_cnn(), 0, 1)
