"""Bad input to any `mnistlab` command ends in one line `mnistlab: error: ...` that names the
option and its valid values, exit status 1, and never a traceback.

Every case fails before data is read or training starts (the checks come first), so the
whole file runs in seconds; a real bug still shows its traceback (the last test).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab import cli
from mnistlab.cli import main

TRAIN = ["train", "--recipe", "keras-mlp"]
FAST = ["train", "--recipe", "fast"]


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in-process; check the exit status and stderr shape; the error line."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 1, (argv, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("mnistlab: error: "), err
    return lines[0]


def assert_names(line: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# (argv, what the line must name): the option and the valid values
CASES = {
    # found today
    "batch-size 0": (
        [*TRAIN, "--batch-size", "0"],
        ["--batch-size", "a positive integer", "got 0"],
    ),
    "device gpu": (
        [*TRAIN, "--engine", "torch", "--device", "gpu"],
        ["--device", "one of: cpu, cuda, cuda:N, auto", "'gpu'"],
    ),
    "fast conv1 0": ([*FAST, "--set", "conv1=0"], ["--set conv1", "an integer from 1 to 1024"]),
    "limit 0": ([*TRAIN, "--set", "limit=0"], ["--set limit", "a positive integer"]),
    # settings of any recipe
    "epochs abc": ([*TRAIN, "--set", "epochs=abc"], ["--set epochs", "an integer from 1 to"]),
    "epochs flag 0": ([*TRAIN, "--epochs", "0"], ["--epochs", "an integer from 1 to"]),
    "epochs huge": ([*TRAIN, "--epochs", "9" * 12], ["--epochs", "an integer from 1 to 1000000"]),
    "epochs 5000 digits": ([*TRAIN, "--epochs", "9" * 5000], ["--epochs", "an integer"]),
    "lr -1": ([*TRAIN, "--set", "lr=-1"], ["--set lr", "a positive finite number"]),
    "lr nan": ([*TRAIN, "--set", "lr=nan"], ["--set lr", "a positive finite number", "nan"]),
    "lr flag inf": ([*TRAIN, "--lr", "inf"], ["--lr", "a positive finite number"]),
    "lr empty": ([*TRAIN, "--set", "lr="], ["--set lr", "got nothing"]),
    "seed -1": ([*TRAIN, "--seed", "-1"], ["--seed", "an integer from 0 to 4294967295"]),
    "seed float": ([*TRAIN, "--set", "seed=0.5"], ["--set seed", "an integer from 0"]),
    "test_limit -5": ([*TRAIN, "--set", "test_limit=-5"], ["--set test_limit", "positive"]),
    "unknown key": (
        [*TRAIN, "--set", "momentum=0.9"],
        ["--set momentum", "no setting 'momentum'", "its settings: epochs, batch_size, lr"],
    ),
    "not key=value": ([*TRAIN, "--set", "limit"], ["--set 'limit'", "KEY=VALUE"]),
    "flag the recipe lacks": (
        ["train", "--recipe", "one-layer-sigmoid", "--batch-size", "10"],
        ["--batch-size", "no setting 'batch_size'", "its settings: epochs, lr"],
    ),
    "loss unknown": (
        ["train", "--recipe", "one-layer-sigmoid", "--set", "loss=hinge"],
        ["--set loss", "one of: categorical_crossentropy"],
    ),
    "pixels unknown": (
        ["train", "--recipe", "softmax-regression", "--set", "pixels=gray"],
        ["--set pixels", "one of: unit, raw, 0.01-1"],
    ),
    "method unknown": (
        ["train", "--recipe", "numerical-30", "--set", "method=slow"],
        ["--set method", "one of: fast, naive"],
    ),
    "log_every 0": (
        ["train", "--recipe", "backprop-30", "--set", "log_every=0"],
        ["--set log_every", "a positive integer"],
    ),
    "stop_at_accuracy 2": (
        ["train", "--recipe", "one-layer-sigmoid", "--set", "stop_at_accuracy=2"],
        ["--set stop_at_accuracy", "at most 1"],
    ),
    # the fast recipe's own settings
    "fast crop 9": ([*FAST, "--set", "crop=9"], ["--set crop", "an integer from 0 to 8"]),
    "fast dense huge": ([*FAST, "--set", "dense=10000000"], ["--set dense", "from 1 to 65536"]),
    "fast schedule": (
        [*FAST, "--set", "schedule=cosine"],
        ["--set schedule", "one of: constant, linear, onecycle"],
    ),
    "fast warmup 1": ([*FAST, "--set", "warmup=1"], ["--set warmup", "from 0 to 1"]),
    "fast beta_2 1.5": ([*FAST, "--set", "beta_2=1.5"], ["--set beta_2", "from 0 to 1"]),
    "fast smoothing -0.1": (
        [*FAST, "--set", "label_smoothing=-0.1"],
        ["--set label_smoothing", "from 0 to 1"],
    ),
    "fast precision": (
        [*FAST, "--set", "precision=half"],
        ["--set precision", "one of: auto, float32, bfloat16"],
    ),
    "fast bfloat16 on numpy": (
        [*FAST, "--set", "precision=bfloat16"],
        ["--set precision", "needs --engine torch"],
    ),
    "fast channels_last": (
        [*FAST, "--set", "channels_last=maybe"],
        ["--set channels_last", "true or false"],
    ),
    "fast threads -1": ([*FAST, "--set", "threads=-1"], ["--set threads", "from 0"]),
    "fast dashed key": ([*FAST, "--set", "batch-size=0"], ["--set batch-size", "positive"]),
    # the handwriting recipe
    "handwriting dropout 1": (
        ["train", "--recipe", "handwriting", "--set", "dropout=1"],
        ["--set dropout", "from 0 to 1 (1 excluded)"],
    ),
    "handwriting copies huge": (
        ["train", "--recipe", "handwriting", "--set", "copies=1000"],
        ["--set copies", "an integer from 0 to 20"],
    ),
    "handwriting thinner > thicker": (
        ["train", "--recipe", "handwriting", "--set", "thinner=1", "--set", "thicker=0.5"],
        ["--set thinner", "at most thicker"],
    ),
    # recipe, dataset, engine, device
    "recipe unknown": (
        ["train", "--recipe", "nope"],
        ["--recipe nope", "known recipes: pretrained-sigmoid"],
    ),
    "dataset unknown": (
        [*TRAIN, "--dataset", "cifar"],
        ["--dataset", "'cifar'", "'fashion-mnist', 'mnist'"],
    ),
    "dataset the recipe lacks": (
        [*FAST, "--dataset", "fashion-mnist"],
        ["--dataset fashion-mnist", "mnist only"],
    ),
    "engine unknown": ([*TRAIN, "--engine", "jax"], ["--engine", "'numpy', 'torch'"]),
    "engine the recipe lacks": (
        ["train", "--recipe", "numerical-30", "--engine", "torch"],
        ["--engine torch", "numpy only"],
    ),
    "device cuda on numpy": (
        [*TRAIN, "--device", "cuda"],
        ["--device cuda", "--engine torch", "cpu, cuda, cuda:N"],
    ),
    "no recipe": (["train"], ["--recipe", "--resume", "required"]),
    # compare
    "compare nothing": (["compare"], ["RUN_DIR", "--recipes"]),
    "compare unknown recipe": (["compare", "--recipes", "keras-mlp,nope"], ["--recipe nope"]),
    "compare bad setting": (
        ["compare", "--recipes", "keras-mlp,fast", "--set", "lr=0"],
        ["--set lr", "positive"],
    ),
    "compare empty recipes": (["compare", "--recipes", ","], ["--recipes", "a,b,c"]),
    # eval, predict, serve
    "eval batch-size 0": (["eval", "x.safetensors", "--batch-size", "0"], ["--batch-size"]),
    "eval seed -1": (["eval", "x.safetensors", "--seed", "-1"], ["--seed", "from 0 to"]),
    "eval split": (["eval", "x.safetensors", "--split", "valid"], ["--split", "'test', 'train'"]),
    "predict top 0": (["predict", "x.png", "--top", "0"], ["--top", "from 1 to 10"]),
    "predict top abc": (["predict", "x.png", "--top", "abc"], ["--top", "from 1 to 10"]),
    "serve port 70000": (["serve", "--port", "70000"], ["--port", "from 1 to 65535"]),
    "serve port -1": (["serve", "--port", "-1"], ["--port", "from 1 to 65535"]),
    # bench and data
    "bench repeat 0": (["bench", "inference", "--repeat", "0"], ["--repeat", "at least 1"]),
    "bench dtype": (["bench", "inference", "--dtype", "float16"], ["--dtype", "'float32'"]),
    "bench hidden huge": (
        ["bench", "numgrad", "--hidden", "100000000"],
        ["--hidden", "from 1 to 4,096"],
    ),
    "bench seed -1": (["bench", "numgrad", "--seed", "-1"], ["--seed", "from 0 to"]),
    "bench no subcommand": (["bench"], ["SUBCOMMAND", "required"]),
    "grid count 0": (["data", "grid", "--count", "0", "--out", "g.png"], ["--count", "at least 1"]),
    "grid start -1": (["data", "grid", "--start", "-1", "--out", "g.png"], ["--start"]),
    "show index abc": (["data", "show", "abc"], ["index", "'abc'"]),
    "command unknown": (["fly"], ["COMMAND", "'train'"]),
    "option unknown": ([*TRAIN, "--momentum", "0.9"], ["--momentum"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_the_option(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # a run directory made by mistake would land here
    argv, fragments = CASES[case]
    assert_names(one_error_line(argv, capsys), *fragments)
    assert not (tmp_path / "runs").exists()  # refused before any run directory is made


def test_cuda_on_a_machine_without_it_names_the_device(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_error_line([*TRAIN, "--engine", "torch", "--device", "cuda"], capsys)
    assert_names(line, "--device cuda", "CUDA is not available")


def test_resume_needs_a_run_directory(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert_names(one_error_line(["train", "--resume", str(missing)], capsys),
                 f"--resume {missing}", "no such directory")  # fmt: skip
    assert_names(one_error_line(["train", "--resume", str(tmp_path)], capsys),
                 "--resume", "not a run directory", "config.json")  # fmt: skip
    (tmp_path / "config.json").write_text("{not json")
    assert_names(one_error_line(["train", "--resume", str(tmp_path)], capsys),
                 "--resume", "config.json is not valid JSON")  # fmt: skip
    (tmp_path / "config.json").write_text('{"recipe": "keras-mlp"}')
    assert_names(one_error_line(["train", "--resume", str(tmp_path)], capsys),
                 "--resume", "not a mnistlab run's", "config")  # fmt: skip
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_names(one_error_line(["train", "--resume", str(a_file)], capsys),
                 "--resume", "not a directory")  # fmt: skip


def test_resume_takes_no_new_settings_and_needs_a_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = {"recipe": "keras-mlp", "config": {"epochs": 1}, "dataset": "mnist",
              "engine": "numpy", "device": None}  # fmt: skip
    (run / "config.json").write_text(json.dumps(config))
    line = one_error_line(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert_names(line, "--resume", "--epochs")
    line = one_error_line(["train", "--resume", str(run), "--set", "limit=3"], capsys)
    assert_names(line, "--resume", "--set")
    line = one_error_line(["train", "--resume", str(run)], capsys)
    assert_names(line, "--resume", "no checkpoint", "checkpoint.safetensors")
    (run / "config.json").write_text(json.dumps({**config, "config": {"epochs": "ten"}}))
    line = one_error_line(["train", "--resume", str(run)], capsys)
    assert_names(line, f"--resume {run}: config.json epochs", "an integer from 1 to")
    (run / "config.json").write_text(json.dumps({**config, "device": "gpu"}))
    line = one_error_line(["train", "--resume", str(run)], capsys)
    assert_names(line, f"--resume {run}: config.json device", "one of: cpu, cuda, cuda:N, auto")
    (run / "config.json").write_text(json.dumps({**config, "engine": "jax"}))
    line = one_error_line(["train", "--resume", str(run)], capsys)
    assert_names(line, "--resume", "unknown dataset or engine", "'jax'")


def test_output_paths_blocked_by_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_error_line([*TRAIN, "--out", str(blocker / "run")], capsys)
    assert_names(line, "--out", "is a file, not a directory")
    line = one_error_line([*TRAIN, "--out", str(blocker)], capsys)
    assert_names(line, "--out", "not a directory")
    line = one_error_line(["data", "grid", "--out", str(blocker / "g.png")], capsys)
    assert_names(line, "--out", "is a file, not a directory")
    line = one_error_line(["data", "grid", "--out", str(tmp_path)], capsys)
    assert_names(line, "--out", "is a directory; expected a file name")
    line = one_error_line(["data", "convert", "mnist:test", str(blocker / "x.csv")], capsys)
    assert_names(line, "DST", "is a file, not a directory")
    line = one_error_line(["compare", str(tmp_path), "--out", str(blocker)], capsys)
    assert_names(line, "--out", "not a directory")


def test_eval_of_a_missing_or_non_model_file(tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    missing = tmp_path / "missing.safetensors"
    line = one_error_line(["eval", str(missing), *out], capsys)
    assert_names(line, f"MODEL {missing}", "no such model file")
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a model")
    assert_names(one_error_line(["eval", str(junk), *out], capsys), "MODEL", "safetensors")
    picture = tmp_path / "digit.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert_names(one_error_line(["eval", str(picture), *out], capsys), "MODEL", "safetensors")
    line = one_error_line(["eval", str(tmp_path), *out], capsys)
    assert_names(line, "MODEL", "is a directory, not a model file")
    assert not (tmp_path / "out").exists()


def test_predict_of_a_missing_file_or_a_non_image(tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert_names(one_error_line(["predict", str(missing)], capsys),
                 f"IMAGE {missing}", "no such file")  # fmt: skip
    text = tmp_path / "notes.png"
    text.write_text("hello, not a picture")
    assert_names(one_error_line(["predict", str(text)], capsys),
                 f"IMAGE {text}", "not a readable image")  # fmt: skip
    assert_names(one_error_line(["predict", str(tmp_path)], capsys), "IMAGE", "not a regular")
    model = tmp_path / "model.safetensors"
    model.write_text("junk")
    assert_names(one_error_line(["predict", str(text), "--model", str(model)], capsys),
                 f"--model {model}", "safetensors")  # fmt: skip
    assert_names(one_error_line(["predict", str(text), "--model", str(missing)], capsys),
                 "--model", "no such model file")  # fmt: skip


def test_compare_of_directories_that_are_not_finished_runs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(["compare", str(empty)], capsys)
    assert_names(line, f"RUN_DIR {empty}", "not a finished run", "metrics.json")
    (empty / "metrics.json").write_text("[1, 2]")
    assert_names(one_error_line(["compare", str(empty)], capsys), "RUN_DIR", "JSON object")
    (empty / "metrics.json").write_text('{"recipe": "fast"}')
    assert_names(one_error_line(["compare", str(empty)], capsys), "RUN_DIR", "no accuracy")
    (empty / "metrics.json").write_text("{oops")
    assert_names(one_error_line(["compare", str(empty)], capsys), "RUN_DIR", "not valid JSON")
    missing = tmp_path / "missing"
    assert_names(one_error_line(["compare", str(missing)], capsys), "RUN_DIR", "no such")
    line = one_error_line(["compare", str(empty), "--set", "lr=1"], capsys)
    assert_names(line, "--set", "--recipes")


def test_bench_with_a_missing_or_broken_weight_file(tmp_path, capsys):
    missing = tmp_path / "sample_weight.pkl"
    line = one_error_line(["bench", "inference", "--weights", str(missing)], capsys)
    assert_names(line, "--weights", str(missing))
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"hello")
    line = one_error_line(["bench", "inference", "--weights", str(broken)], capsys)
    assert_names(line, f"--weights {broken}", "pickle")


def test_serve_on_a_port_in_use(capsys):
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(["serve", "--port", str(port)], capsys)
    assert_names(line, f"--port {port}", "cannot listen on 127.0.0.1")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        ([*TRAIN, "--batch-size", "0"], ["--batch-size", "a positive integer"]),
        ([*FAST, "--set", "conv1=0"], ["--set conv1", "an integer from 1 to 1024"]),
    ],
)
def test_the_console_script_exits_1_with_one_line(tmp_path, argv, fragments):
    done = subprocess.run([sys.executable, "-m", "mnistlab", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnistlab: error: "), done.stderr
    assert_names(lines[0], *fragments)
    assert not (tmp_path / "runs").exists()


def test_a_real_bug_still_shows_its_traceback(monkeypatch):
    """Only refused input becomes one line: an unexpected error is not swallowed."""
    import mnistlab.cli.train as train_cli

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(train_cli, "cmd_recipes", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["recipes"])
