"""xrt host relay (first/last segment) against a recording fake of the pyxrt API: exact call sequence, buffer
sizes and kernel arguments. The fake's card "computes" by copying idma's input to odma's output + 1."""

from __future__ import annotations

import numpy as np
import pytest
from elasticdf_contract.wiring import CardWiring
from elasticdf_segment import relay, testmodels
from elasticdf_segment.backends import BackendError, XrtBackend, XrtCard
from test_segment_vnx import wiring

TO, FROM = "XCL_BO_SYNC_BO_TO_DEVICE", "XCL_BO_SYNC_BO_FROM_DEVICE"


class FakePyxrt:
    """Records every call as a tuple; bo memory is a real bytearray so map()/sync() move actual bytes."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.device_mem: dict[int, bytearray] = {}
        self.fail_state = None
        fake = self

        class xclBOSyncDirection:  # noqa: N801 - pyxrt's spelling
            XCL_BO_SYNC_BO_TO_DEVICE = TO
            XCL_BO_SYNC_BO_FROM_DEVICE = FROM

        class ert_cmd_state:  # noqa: N801
            ERT_CMD_STATE_COMPLETED = "COMPLETED"

        class xclbin:  # noqa: N801
            def __init__(self, path):
                fake.calls.append(("xclbin", path))

        class device:  # noqa: N801
            def __init__(self, index):
                fake.calls.append(("device", index))

            def load_xclbin(self, xb):
                fake.calls.append(("load_xclbin",))
                return "uuid-1"

        class bo:  # noqa: N801
            normal = "normal"

            def __init__(self, dev, size, flags, group):
                fake.calls.append(("bo", size, flags, group))
                self.id, self.host = len(fake.device_mem), bytearray(size)
                fake.device_mem[self.id] = bytearray(size)

            def map(self):
                fake.calls.append(("map", self.id))
                return memoryview(self.host)

            def sync(self, direction, size, offset):
                fake.calls.append(("sync", self.id, direction, size, offset))
                dev = fake.device_mem[self.id]
                if direction == TO:
                    dev[offset:offset + size] = self.host[offset:offset + size]
                else:
                    self.host[offset:offset + size] = dev[offset:offset + size]

        class run:  # noqa: N801
            def __init__(self, name, args):
                self.name, self.args = name, args

            def wait(self):
                fake.calls.append(("wait", self.name))
                if fake.fail_state is not None:
                    return fake.fail_state
                if self.name == "odma0":  # the card: output = input + 1 (as float32)
                    src = np.frombuffer(fake.device_mem[fake.idma_bo], np.float32)
                    fake.device_mem[self.args[0].id][:] = (src[:len(fake.device_mem[self.args[0].id]) // 4]
                                                           + 1).tobytes()
                return fake.ert_cmd_state.ERT_CMD_STATE_COMPLETED

        class kernel:  # noqa: N801
            def __init__(self, dev, uuid, name):
                fake.calls.append(("kernel", uuid, name))
                self.name = name

            def group_id(self, arg):
                fake.calls.append(("group_id", self.name, arg))
                return 1 if self.name.startswith("idma") else 2  # memory bank of the DMA buffer

            def __call__(self, *args):
                fake.calls.append(("start", self.name, *(f"bo{a.id}" if isinstance(a, bo) else a for a in args)))
                if self.name == "idma0":
                    fake.idma_bo = args[0].id
                return run(self.name, args)

        self.xclBOSyncDirection, self.ert_cmd_state, self.xclbin = xclBOSyncDirection, ert_cmd_state, xclbin
        self.device, self.bo, self.kernel = device, bo, kernel


def specs():
    return relay.TensorSpec((1, 3, 4, 4), np.dtype("<f4")), relay.TensorSpec((1, 10), np.dtype("<f4"))


def test_first_segment_writes_the_frame_and_starts_idma_with_buffer_and_batch_1():
    fake = FakePyxrt()
    r = relay.XrtRelay(fake, fake.device(0), "uuid-1", specs()[0], None)
    frame = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    fake.calls.clear()
    r.push(frame)
    assert fake.calls == [("sync", 0, TO, 192, 0), ("start", "idma0", "bo0", 1), ("wait", "idma0")]
    assert bytes(fake.device_mem[0]) == frame.tobytes()


def test_setup_allocates_one_frame_buffers_in_each_kernels_bank():
    fake = FakePyxrt()
    relay.XrtRelay(fake, fake.device(0), "uuid-1", *specs())
    assert fake.calls[1:] == [("kernel", "uuid-1", "idma0"), ("group_id", "idma0", 0), ("bo", 192, "normal", 1),
                              ("map", 0), ("kernel", "uuid-1", "odma0"), ("group_id", "odma0", 0),
                              ("bo", 40, "normal", 2), ("map", 1)]


def test_one_card_instance_starts_odma_before_idma_and_reads_the_result_back():
    fake = FakePyxrt()
    r = relay.XrtRelay(fake, fake.device(0), "uuid-1", relay.TensorSpec((1, 10), np.dtype("<f4")),
                       relay.TensorSpec((1, 10), np.dtype("<f4")))
    fake.calls.clear()
    out = r.process(np.arange(10, dtype=np.float32).reshape(1, 10))
    assert fake.calls == [("sync", 0, TO, 40, 0), ("start", "odma0", "bo1", 1), ("start", "idma0", "bo0", 1),
                          ("wait", "idma0"), ("wait", "odma0"), ("sync", 1, FROM, 40, 0)]
    assert out.dtype == np.float32 and out.shape == (1, 10)
    assert np.array_equal(out, np.arange(10, dtype=np.float32).reshape(1, 10) + 1)


def test_wrong_frame_size_is_refused_before_any_dma():
    fake = FakePyxrt()
    r = relay.XrtRelay(fake, fake.device(0), "uuid-1", specs()[0], None)
    fake.calls.clear()
    with pytest.raises(relay.RelayError, match="expects"):
        r.push(np.zeros((1, 3, 4, 5), np.float32))
    assert fake.calls == []


def test_failed_run_state_is_an_error():
    fake = FakePyxrt()
    r = relay.XrtRelay(fake, fake.device(0), "uuid-1", None, specs()[1])
    fake.fail_state = 7  # ERT_CMD_STATE_ERROR
    with pytest.raises(relay.RelayError, match="odma0 run ended"):
        r.pull()


def test_backend_first_and_last_on_one_card(tmp_path):
    """XrtCard + XrtBackend end to end on the fake: xclbin loaded, no VNx for a one-card instance, buffers sized
    from the segment ONNX, process() returns the card's result; readiness is reported."""
    model = testmodels.plain_cnn(channels=2, size=4)
    path = tmp_path / "seg.onnx"
    path.write_bytes(model.SerializeToString())
    (tmp_path / "seg.xclbin").write_bytes(b"x")
    w = wiring(0, segments=1).model_copy(update={"artifacts": wiring(0).artifacts.model_copy(
        update={"xclbin": str(tmp_path / "seg.xclbin")})})
    fake = FakePyxrt()
    card = XrtCard(CardWiring.of_segment(w), device_index=0)
    backend = XrtBackend(w, card, 0, onnx_path=str(path))
    with pytest.raises(BackendError, match="not flashed"):
        backend.start()
    card.start(fake)
    backend.start()
    assert backend.ready() == (True, "")
    assert ("bo", 1 * 3 * 4 * 4 * 4, "normal", 1) in fake.calls and ("bo", 10 * 4, "normal", 2) in fake.calls
    assert not any(c[0] == "kernel" and "networklayer" in c[2] for c in fake.calls)


def test_card_hosting_several_segments_is_flashed_once_and_each_segment_drives_its_own_dma(tmp_path):
    """Two one-card instances on one card: one load_xclbin, no VNx (no QSFP peers), idma0/odma0 and idma1/odma1."""
    model = testmodels.plain_cnn(channels=2, size=4)
    path = tmp_path / "seg.onnx"
    path.write_bytes(model.SerializeToString())
    artifacts = wiring(0).artifacts.model_copy(update={"xclbin": str(tmp_path / "build.xclbin")})
    (tmp_path / "build.xclbin").write_bytes(b"x")
    segments = [wiring(0, segments=1).model_copy(update={
        "instance": i, "instance_id": f"default/net-{i}", "artifacts": artifacts,
        "listen": wiring(0).listen.model_copy(update={"port": 7000 + i})}) for i in range(2)]
    card = XrtCard(CardWiring(node="alveo-0", card=0, card_type="u280", mode="xrt", build="sha256:b",
                              segments=segments), device_index=0)
    fake = FakePyxrt()
    card.start(fake)
    backends = [XrtBackend(w, card, p, onnx_path=str(path)) for p, w in enumerate(segments)]
    for b in backends:
        b.start()
    assert [c for c in fake.calls if c[0] == "load_xclbin"] == [("load_xclbin",)]
    assert [c[2] for c in fake.calls if c[0] == "kernel"] == ["idma0", "odma0", "idma1", "odma1"]
    assert all(b.ready() == (True, "") for b in backends)


def test_a_card_whose_segments_name_different_bitstreams_is_refused():
    segments = [wiring(0, segments=1).model_copy(update={
        "instance": i, "artifacts": wiring(0).artifacts.model_copy(update={"xclbin": f"/b{i}.xclbin"}),
        "listen": wiring(0).listen.model_copy(update={"port": 7000 + i})}) for i in range(2)]
    card = CardWiring(node="alveo-0", card=0, card_type="u280", mode="xrt", build="sha256:b", segments=segments)
    with pytest.raises(BackendError, match="one bitstream"):
        XrtCard(card, device_index=0).start(FakePyxrt())


def test_which_segments_relay_tcp():
    first, middle, last = (XrtBackend(wiring(i), XrtCard(CardWiring.of_segment(wiring(i))), 0) for i in range(3))
    assert first.relays_tcp and not first.returns_tcp  # gateway -> idma; results continue over VNx
    assert not middle.relays_tcp and not last.relays_tcp  # pure VNx in; the last sends odma results itself
