"""Frame protocol round trips and the ONNX layer-range splitter."""

from __future__ import annotations

import io
import socket
import threading

import numpy as np
import onnxruntime as ort
import pytest
from elasticdf_segment import split, testmodels
from elasticdf_segment.framing import (
    KIND_ERROR,
    KIND_HELLO,
    Frame,
    FrameReader,
    FramingError,
    batch_parts,
    encode,
    encode_parts,
    read_frame,
    send_frame,
)


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


def test_scatter_encoding_is_the_same_wire_format_and_does_not_copy_the_payload():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    head, payload = encode_parts(Frame.of_tensor(7, array))
    assert head + bytes(payload) == encode(Frame.of_tensor(7, array))
    assert np.shares_memory(np.frombuffer(payload, np.float32), array)  # a view of the array, not a copy
    big_endian = array.astype(">f4")
    assert read_frame(io.BytesIO(encode(Frame.of_tensor(1, big_endian)))).tensor.dtype == np.dtype("<f4")


def test_a_batch_of_arrays_is_one_frame_of_their_concatenation_without_copying_them():
    parts = [np.full((n, 2, 3), n, np.uint8) for n in (1, 3, 2)]
    encoded = batch_parts(11, parts)
    assert b"".join(encoded) == encode(Frame.of_tensor(11, np.concatenate(parts)))
    assert all(np.shares_memory(np.frombuffer(view, np.uint8), part) for view, part in zip(encoded[1:], parts))
    with pytest.raises(FramingError, match="one dtype and one frame shape"):
        batch_parts(1, [parts[0], parts[1].astype(np.float32)])
    with pytest.raises(FramingError, match="one dtype and one frame shape"):
        batch_parts(1, [parts[0], np.zeros((1, 3, 2), np.uint8)])


def test_frame_reader_over_a_socket_matches_read_frame():
    """Small frames batched in one receive, a payload larger than the socket buffers (partial sendmsg,
    recv_into the array), error and hello frames, then a clean EOF."""
    big = (np.arange(3 * 1024 * 1024) % 251).astype(np.uint8).reshape(3, 1024, 1024)
    frames = [Frame.hello("{}"), *(Frame.of_tensor(i, np.full((1, 2), i, np.int64)) for i in range(50)),
              Frame.of_tensor(99, big), Frame.error(5, "boom"), Frame.of_tensor(6, np.zeros((0, 3), np.float32))]
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)

    def write() -> None:
        for f in frames:
            send_frame(a, f)
        a.close()

    writer = threading.Thread(target=write)
    writer.start()
    reader = FrameReader(b, buffer_size=4096)
    got = [reader.read() for _ in frames]
    assert reader.read() is None
    writer.join()
    assert got[0].kind == KIND_HELLO
    for want, frame in zip(frames[1:], got[1:]):
        assert (frame.kind, frame.request_id, frame.message) == (want.kind, want.request_id, want.message)
        if want.tensor is not None:
            assert frame.tensor.dtype == want.tensor.dtype and np.array_equal(frame.tensor, want.tensor)
            assert frame.tensor.flags.writeable


def test_frame_reader_reports_truncation_and_garbage():
    a, b = socket.socketpair()
    a.sendall(encode(Frame.of_tensor(1, np.zeros(1000, np.float32)))[:-10])
    a.close()
    with pytest.raises(ConnectionError):
        FrameReader(b).read()
    a, b = socket.socketpair()
    a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(FramingError, match="bad magic"):
        FrameReader(b).read()


def _run_pipeline(parts: list, frame: np.ndarray) -> np.ndarray:
    tensor = frame
    for part in parts:
        tensor = part.run(None, {part.get_inputs()[0].name: tensor})[0]
    return tensor


@pytest.mark.parametrize("make", [testmodels.plain_cnn, testmodels.residual_cnn])
def test_every_two_way_cut_is_bit_exact(make):
    """Cuts inside residual blocks carry the skip tensor and the branch together in one packed tensor."""
    model = make(seed=11)
    full = ort.InferenceSession(model.SerializeToString())
    layers = len(split.layer_names(model))
    frames = testmodels.random_frames(3)
    for at in range(1, layers):
        parts = [ort.InferenceSession(m.SerializeToString()) for m in split.split(model, [[0, at - 1],
                                                                                          [at, layers - 1]])]
        for frame in frames:
            assert np.array_equal(_run_pipeline(parts, frame), full.run(None, {"x": frame})[0]), at


def test_tensor_skipping_a_whole_segment_passes_through_it():
    model = testmodels.residual_cnn(seed=3)  # layers: stem, res0a, res0b, res0add, ...; cut res0a | res0b | add
    parts = [ort.InferenceSession(m.SerializeToString()) for m in split.split(model, [[0, 1], [2, 2], [3, 8]])]
    assert parts[1].get_inputs()[0].name == split.PACKED_INPUT  # stem output + res0a output
    frame = testmodels.random_frames(1)[0]
    full = ort.InferenceSession(model.SerializeToString()).run(None, {"x": frame})[0]
    assert np.array_equal(_run_pipeline(parts, frame), full)


def test_cut_outside_the_model_is_refused():
    with pytest.raises(ValueError, match="outside the model"):
        split.cut(testmodels.residual_cnn(), 3, 99)


def test_lowered_finn_model_splits_anywhere_and_runs_batches():
    """A zoo model lowered from FINN dataflow ONNX, cut at every layer boundary, runs a batch of frames (the
    gateway's dynamic batching) exactly like the unsplit model runs them one by one."""
    from elasticdf_partitioner.modelio import runnable_model

    model = runnable_model("zoo://cnv")
    full = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (1, 32, 32, 3)).astype(np.float32) for _ in range(3)]
    expected = np.concatenate([full.run(None, {"global_in": f})[0] for f in frames])
    layers = len(split.layer_names(model))
    for at in range(1, layers):
        parts = [ort.InferenceSession(m.SerializeToString())
                 for m in split.split(model, [[0, at - 1], [at, layers - 1]])]
        assert np.array_equal(_run_pipeline(parts, np.concatenate(frames)), expected), at
