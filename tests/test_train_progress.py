"""`numpyseg train` announces its start-up steps on stderr through the Trainer's progress callback;
--quiet silences them."""


from numpyseg.cli.main import main

TINY = ["--synthetic-count", "4", "--synthetic-size", "32", "--batch-size", "2", "--base-channels", "8",
        "--val-count", "1", "--block-size", "3", "--epochs", "1"]


def test_train_start_up_progress_on_stderr_and_quiet_silences_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NUMPYSEG_QUIET_COMPILE", "1")     # the kernels' own one-time compile notice
    assert main(["train", "--out", str(tmp_path / "a")] + TINY) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "  reading the synthetic training images" in lines
    assert "  4 training images read; choosing the validation split" in lines
    assert any(line.startswith("  3 training and 1 validation images; first step of epoch 1 of 1")
               for line in lines), captured.err
    assert "reading the" not in captured.out                # progress is not mixed into the results
    assert main(["train", "--out", str(tmp_path / "b"), "--quiet"] + TINY) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "epoch" in captured.out                          # the run's own report still goes to stdout
