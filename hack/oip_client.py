"""Send real inference requests to a served ElasticInference with the Open Inference Protocol's standard client
(tritonclient, HTTP with binary tensors) and check every answer against the unsplit model run locally.

    .venv/bin/python hack/oip_client.py --url 127.0.0.1:PORT --model cnv [--answers 4] [--seconds 5]
                                        [--concurrency 4]

Prints the served model's metadata, a few answers next to the unsplit model's (onnxruntime on the model exactly
as the segments build it: elasticdf_partitioner.modelio.runnable_model), then the frames per second observed
over --seconds with --concurrency requests in flight. Exits 1 when any answer differs or any request fails.
Used by `make demo` (hack/demo.sh) and the real-node tests (tests/real).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def reference(model_name: str, frames: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`frames` random inputs for the zoo model and the unsplit model's outputs for them."""
    from elasticdf_partitioner.emulate_command import random_frames, unsplit_outputs
    from elasticdf_partitioner.modelio import runnable_model
    from elasticdf_partitioner.zoo import zoo_uri

    model = runnable_model(zoo_uri(model_name))
    inputs = random_frames(model, frames, seed)
    return inputs, unsplit_outputs(model, inputs)


class Client:
    """One model behind a gateway: input name from its metadata, tensors sent as binary. One per thread:
    tritonclient's HTTP client runs on gevent, whose connections belong to the thread that made them."""

    def __init__(self, url: str, model: str, timeout: float = 60.0):
        import tritonclient.http as thttp

        self.thttp = thttp
        self.url = url
        self.model = model
        self.client = thttp.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
        self.metadata = self.client.get_model_metadata(model)
        self.input = self.metadata["inputs"][0]

    def wait_ready(self, timeout: float) -> bool:
        """Until the gateway has a pipeline instance in rotation (its own health checks, not the API's view)."""
        deadline = time.monotonic() + timeout
        while not self.client.is_model_ready(self.model):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def infer(self, frame: np.ndarray, request_id: str = "") -> np.ndarray:
        inp = self.thttp.InferInput(self.input["name"], list(frame.shape), self.input["datatype"])
        inp.set_data_from_numpy(frame, binary_data=True)
        result = self.client.infer(self.model, [inp], request_id=request_id)
        return result.as_numpy(self.metadata["outputs"][0]["name"])

    def close(self) -> None:
        self.client.close()


@dataclass
class Outcome:
    """What became of one request: its answer was right, wrong, or it failed with `error`."""

    request: int
    frame: int
    correct: bool = False
    error: str = ""


@dataclass
class Traffic:
    """Requests from `workers` threads (each with its own Client for `url`), each answer checked against the
    expected output of its frame, until stop(); every request gets exactly one Outcome. After a failure a
    thread waits `backoff` seconds, as a client does, rather than spinning on an unavailable endpoint."""

    url: str
    model: str
    inputs: list[np.ndarray]
    expected: list[np.ndarray]
    workers: int = 2
    backoff: float = 0.05
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]

    def start(self) -> Traffic:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.seconds = time.monotonic() - self.started
        return self.outcomes

    def since(self, count: int) -> list[Outcome]:
        with self._lock:
            return self.outcomes[count:]

    def recovered(self, count: int) -> bool:
        """Whether the last `count` requests were all answered right."""
        recent = self.since(max(0, len(self.outcomes) - count))
        return len(recent) >= count and all(o.correct for o in recent)

    def _ticket(self) -> int:
        with self._lock:
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        client = Client(self.url, self.model)
        try:
            while not self._stop.is_set():
                outcome = self._one(client)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.error:
                    time.sleep(self.backoff)
        finally:
            client.close()

    def _one(self, client: Client) -> Outcome:
        request = self._ticket()
        frame = request % len(self.inputs)
        outcome = Outcome(request, frame)
        try:
            answer = client.infer(self.inputs[frame], request_id=f"r{request}")
            outcome.correct = bool(np.array_equal(answer, self.expected[frame]))
        except Exception as exc:  # noqa: BLE001 - a protocol error or a broken connection: both are outcomes
            outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome


def measure(client: Client, inputs, expected, seconds: float, concurrency: int) -> tuple[float, list[Outcome]]:
    traffic = Traffic(client.url, client.model, inputs, expected, workers=concurrency).start()
    time.sleep(seconds)
    outcomes = traffic.stop()
    return sum(o.correct for o in outcomes) / traffic.seconds, outcomes


def show_answers(client: Client, inputs, expected, count: int, say: Callable[[str], None]) -> int:
    wrong = 0
    for i in range(min(count, len(inputs))):
        answer = client.infer(inputs[i], request_id=f"show-{i}")
        same = np.array_equal(answer, expected[i])
        wrong += not same
        values = np.array2string(answer.ravel()[:10], precision=3, separator=" ")
        say(f"  request {i}: output {list(answer.shape)} {values}"
            f"{' ...' if answer.size > 10 else ''}  {'= the unsplit model' if same else '!= the unsplit model'}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="oip_client.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="host:port of the gateway's REST endpoint")
    p.add_argument("--model", required=True, help="zoo model name (served as /v2/models/NAME)")
    p.add_argument("--answers", type=int, default=4, help="answers to print")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to measure fps")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight while measuring")
    p.add_argument("--wait", type=float, default=180.0, help="seconds to wait for the model to be ready")
    args = p.parse_args(argv)
    inputs, expected = reference(args.model, 16)
    client = Client(args.url, args.model)
    try:
        if not client.wait_ready(args.wait):
            print(f"model {args.model} at {args.url} not ready after {args.wait:.0f} s", file=sys.stderr)
            return 1
        out = client.metadata["outputs"][0]
        print(f"model {args.model}: input {client.input['name']} {client.input['datatype']} {client.input['shape']}"
              f" -> output {out['name']} {out['datatype']} {out['shape']}")
        wrong = show_answers(client, inputs, expected, args.answers, print)
        fps, outcomes = measure(client, inputs, expected, args.seconds, args.concurrency)
    finally:
        client.close()
    failed = [o for o in outcomes if o.error]
    wrong += sum(not o.correct and not o.error for o in outcomes)
    print(f"observed: {fps:.1f} frames/s over {args.seconds:.0f} s with {args.concurrency} requests in flight "
          f"({len(outcomes)} requests, {wrong} wrong answers, {len(failed)} failed)")
    for o in failed[:3]:
        print(f"  request {o.request} failed: {o.error}")
    return 1 if wrong or failed else 0


if __name__ == "__main__":
    sys.exit(main())
