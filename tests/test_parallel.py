"""The engine's threads: predict and evaluate give each thread whole chunks through its own
replica of the layers, with BLAS on one thread per product, and return what one thread would."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from mnistlab import Sequential
from mnistlab.engines import numpy as model_module
from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D, parallel
from mnistlab.nn.parallel import run_each, single_threaded_blas


def small_cnn(dtype: str = "float32") -> Sequential:
    return Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 12, 12)),
                       MaxPooling2D(2), Dropout(0.5), Flatten(), Dense(16, "tanh"),
                       Dense(10, "softmax")], seed=0, dtype=dtype)


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def images(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, 1, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_predict_on_any_number_of_threads_gives_what_one_forward_gives(
        threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small_cnn("float64"), images(1000)
    expected = model.forward(x)  # the whole batch at once, on this thread
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", threads)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ROWS", 10)
    chunked = []  # each predict must go through the chunk walker, not forward() again
    walk = parallel.each_chunk
    monkeypatch.setattr(model_module, "each_chunk",
                        lambda *args: chunked.append(args[3]) or walk(*args))
    for batch_size in (64, 999, None):  # chunks that do not divide the rows evenly too
        if batch_size is None and threads == "1":
            continue  # one thread, one automatic chunk: that is forward() itself
        out = model.predict(x, batch_size=batch_size)
        assert out.dtype == np.float64 and out.shape == (1000, 10)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)  # row for row
    assert chunked[:2] == [64, 999]


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "binary_crossentropy_sum", "mse"])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_evaluate_on_any_number_of_threads_gives_what_one_pass_gives(
        threads: str, loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small_cnn("float64"), images(1000)
    labels = np.random.default_rng(2).integers(0, 10, 1000)
    model.compile("sgd", loss)
    value, out = model.forward_loss(model.prepare_input(x), labels, training=False)  # one pass
    accuracy = np.mean(out.argmax(1) == labels)
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", threads)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ROWS", 10)
    for batch_size in (None, 64, 999):
        got_loss, got_accuracy = model.evaluate(x, labels, batch_size=batch_size)
        assert got_loss == pytest.approx(value, rel=1e-12)  # a mean, or a sum ("_sum")
        assert got_accuracy == accuracy


def test_evaluate_names_inputs_and_labels_that_do_not_pair_up() -> None:
    model = small_cnn()
    model.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match="1000 inputs and 999 labels"):
        model.evaluate(images(1000), np.zeros(999, dtype=int))
    with pytest.raises(ValueError, match="no inputs"):
        model.evaluate(images(0), np.zeros(0, dtype=int))


def test_a_few_rows_are_predicted_on_the_calling_thread_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, seen = small_cnn(), set()
    dense = model.layers[-1]
    forward = type(dense).forward

    def spy(self, x, training=False):
        seen.add(threading.get_ident())
        return forward(self, x, training)

    monkeypatch.setattr(type(dense), "forward", spy)
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", "2")
    model.predict(images(3))
    assert seen == {threading.get_ident()}


def test_a_replica_shares_the_weights_but_not_the_forward_caches() -> None:
    model = small_cnn()
    model.build()
    dense, conv = model.layers[4], model.layers[0]
    twin, conv_twin = dense.replica(), conv.replica()
    assert twin.params["W"] is dense.params["W"] and conv_twin.params["W"] is conv.params["W"]
    assert twin.activation is not dense.activation
    twin.forward(np.ones((2, 144), np.float32))  # 4 channels x 6 x 6
    conv_twin.forward(images(2))
    assert not hasattr(dense, "x") and not hasattr(conv, "cols")  # the originals untouched
    assert twin.activation.y.shape == (2, 16) and dense.activation.__dict__.get("y") is None


def test_blas_is_single_threaded_inside_the_block_and_restored_after() -> None:
    before = blas_threads()
    with single_threaded_blas():
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before


def test_two_threads_predicting_at_once_both_get_their_outputs_and_blas_is_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, before = small_cnn(), blas_threads()
    x = [images(600), images(800)[::-1].copy()]
    expected = [model.forward(xi) for xi in x]
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", "2")
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ROWS", 10)
    outs: dict[int, np.ndarray] = {}
    callers = [threading.Thread(target=lambda k=k: outs.update({k: model.predict(x[k])}))
               for k in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    for k in range(2):
        np.testing.assert_allclose(outs[k], expected[k], rtol=1e-5, atol=1e-6)
    assert blas_threads() == before


def test_run_each_runs_every_item_at_once_and_passes_errors_on() -> None:
    barrier = threading.Barrier(3, timeout=10)  # only passes if all three run at the same time

    def meet(item: int) -> tuple[int, int]:
        barrier.wait()
        return item, threading.get_ident()

    results = run_each(meet, [0, 1, 2])
    assert [item for item, _ in results] == [0, 1, 2]
    assert results[0][1] == threading.get_ident() and len({t for _, t in results}) == 3

    def fail_on_two(item: int) -> int:
        if item == 2:
            raise ValueError("item 2 is bad")
        return item

    with pytest.raises(ValueError, match="item 2 is bad"):
        run_each(fail_on_two, [0, 1, 2])


def test_each_thread_gets_several_chunks_so_a_late_thread_delays_little(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, rows = small_cnn(), []
    forward = Flatten.forward

    def spy(self, x, training=False):
        rows.append(len(x))
        return forward(self, x, training)

    monkeypatch.setattr(Flatten, "forward", spy)
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", "2")
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ROWS", 10)
    model.predict(images(1000))
    assert len(rows) == 2 * parallel.CHUNKS_PER_THREAD and sum(rows) == 1000


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_predicts_in_parallel_with_threads_of_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import select
    import signal

    model, x = small_cnn(), images(600)
    monkeypatch.setenv("MNISTLAB_NUM_THREADS", "2")
    monkeypatch.setattr(parallel, "MIN_PARALLEL_ROWS", 10)
    expected = model.predict(x)  # the parent's pool thread now exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool has no threads behind it
        ok = np.allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)
        os.write(write, b"ok" if ok else b"wrong")
        os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)  # a child stuck on the parent's pool
    answer = os.read(read, 16) if ready else b"no answer in 60 s"  # would never answer
    os.close(read)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == b"ok"
