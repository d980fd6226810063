"""`mnistlab teach` stores corrections and says what the model now reads; `predict` reads
with a profile ("default" unless told, which is the model itself until taught);
`mnistlab profiles` lists, shows, forgets, exports and imports; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main


@pytest.fixture
def seven(tmp_path: Path, mnist) -> Path:
    """A 7 from MNIST's test set, as a person's PNG: dark ink on white, 140x140."""
    _, (x, y) = mnist
    image = Image.fromarray(255 - x[0]).resize((140, 140))
    assert y[0] == 7
    path = tmp_path / "seven.png"
    image.save(path)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def predicted(argv: list[str], capsys) -> dict:
    code, out, _ = run(["predict", "--json", *argv], capsys)
    assert code == 0
    return json.loads(out.splitlines()[0])


def test_teach_then_predict_reads_the_correction(seven, tmp_path, capsys):
    db = ["--db", str(tmp_path / "p.sqlite")]
    before = predicted([str(seven), *db], capsys)
    assert before["digit"] == 7 and before["profile"] == "default"
    code, out, _ = run(["teach", str(seven), "--label", "1", *db], capsys)
    assert code == 0
    assert f"{seven}: taught 1; now reads 1" in out
    assert "profile default: 1 example in" in out
    assert predicted([str(seven), *db], capsys)["digit"] == 1
    alone = predicted([str(seven), "--no-profile", *db], capsys)
    assert alone["probabilities"] == before["probabilities"] and "profile" not in alone


def test_an_empty_default_profile_is_the_bundled_model(seven, tmp_path, capsys):
    db = tmp_path / "never.sqlite"
    with_profile = predicted([str(seven), "--db", str(db)], capsys)
    alone = predicted([str(seven), "--no-profile"], capsys)
    assert with_profile["probabilities"] == alone["probabilities"]
    assert not db.exists()  # reading never creates the database


def test_profiles_are_kept_apart(seven, tmp_path, capsys):
    db = ["--db", str(tmp_path / "p.sqlite")]
    run(["teach", str(seven), "--label", "2", "--profile", "anna", *db], capsys)
    assert predicted([str(seven), "--profile", "anna", *db], capsys)["digit"] == 2
    assert predicted([str(seven), *db], capsys)["digit"] == 7


def test_teach_json_names_the_profile_and_count(seven, tmp_path, capsys):
    code, out, _ = run(["teach", str(seven), "--label", "4", "--json", "--profile", "ben",
                        "--db", str(tmp_path / "p.sqlite")], capsys)  # fmt: skip
    record = json.loads(out)
    assert code == 0
    assert (record["taught"], record["profile"], record["examples"], record["digit"]) == (
        4, "ben", 1, 4,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["teach", "{seven}", "--label", "12"], "--label: must be a digit 0..9, got '12'"),
        (["teach", "{seven}", "--label", "x"], "--label: must be a digit 0..9"),
        (["teach", "{seven}", "--label", "3", "--profile", "../etc"], "not a valid profile"),
        (["predict", "{seven}", "--profile", "a/b"], "--profile: 'a/b' is not a valid"),
        (["predict", "{seven}", "--profile", "nobody"], "profile 'nobody': no such profile"),
        (["profiles", "show", "nobody"], "profile 'nobody': no such profile"),
        (["profiles", "forget", "nobody"], "profile 'nobody': no such profile"),
        (["profiles", "import", "{seven}"], "seven.png"),
    ],
)
def test_bad_input_is_one_line(seven, tmp_path, capsys, argv, message):
    argv = [a.replace("{seven}", str(seven)) for a in argv]
    code, _, err = run([*argv, "--db", str(tmp_path / "p.sqlite")], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("mnistlab: error: ")
    assert message in err


def test_nothing_is_taught_when_an_image_cannot_be_read(seven, tmp_path, capsys):
    db = tmp_path / "p.sqlite"
    missing = tmp_path / "missing.png"
    code, _, err = run(["teach", str(seven), str(missing), "--label", "1", "--db", str(db)],
                       capsys)  # fmt: skip
    assert code == 1 and f"IMAGE {missing}" in err and "nothing was taught" in err
    _, out, _ = run(["profiles", "list", "--db", str(db)], capsys)
    assert "no profiles" in out


def test_profiles_list_show_export_import_forget(seven, tmp_path, capsys):
    db = ["--db", str(tmp_path / "p.sqlite")]
    run(["teach", str(seven), "--label", "1", "--profile", "anna", *db], capsys)
    _, out, _ = run(["profiles", "list", *db], capsys)
    assert out.startswith("anna: 1 example  (1: 1)")
    _, out, _ = run(["profiles", "show", "anna", *db], capsys)
    assert "profile anna: 1 example" in out and "per digit: 1: 1" in out
    exported = tmp_path / "anna.safetensors"
    assert run(["profiles", "export", "anna", str(exported), *db], capsys)[0] == 0
    code, _, err = run(["profiles", "import", str(exported), *db], capsys)
    assert code == 1 and "already exists" in err
    assert run(["profiles", "import", str(exported), "--as", "copy", *db], capsys)[0] == 0
    assert predicted([str(seven), "--profile", "copy", *db], capsys)["digit"] == 1
    other = ["--db", str(tmp_path / "other.sqlite")]
    _, out, _ = run(["profiles", "import", str(exported), *other], capsys)
    assert "imported profile anna (1 example)" in out
    _, out, _ = run(["profiles", "forget", "anna", *db], capsys)
    assert "forgot profile anna (1 example)" in out
    _, out, _ = run(["profiles", "list", *db], capsys)
    assert "anna" not in out and "copy" in out


def test_the_export_file_holds_no_pickle(seven, tmp_path, capsys):
    db = ["--db", str(tmp_path / "p.sqlite")]
    run(["teach", str(seven), "--label", "1", *db], capsys)
    exported = tmp_path / "default.safetensors"
    run(["profiles", "export", "default", str(exported), *db], capsys)
    import safetensors.numpy

    tensors = safetensors.numpy.load_file(exported)
    assert sorted(tensors) == ["created", "images", "labels"]
    assert tensors["images"].shape == (1, 28, 28) and tensors["images"].dtype == np.uint8
