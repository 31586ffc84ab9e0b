import json

import pytest

from conftest import call_cli, run_cli


@pytest.mark.parametrize("kind, expect", [("datasets", "mnist5k"), ("models", "ir152"), ("defenses", "random-erasing")])
def test_list_commands(kind, expect):
    out = call_cli(kind).stdout
    assert expect in out


@pytest.mark.parametrize("args, message", [
    (["train", "--defense", "magic"], "unknown defense 'magic'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--arch", "vgg99"], "unknown model 'vgg99'"),
    (["train", "--defense", "random-erasing", "--defense-param", "p=2"], "p must be a probability"),
    (["train", "--defense", "random-erasing", "--defense-param", "p"], "is not key=value"),
    (["train", "--epochs", "0"], "epochs must be a positive integer"),
    (["train", "--dataset", "fashion-mnist", "--root", "/no/such/dir"], "does not exist"),
    (["train", "--epochs", "x"], "invalid int value"),
    (["train", "--init-from", "/no/such/run"], "is not a finished training run"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    proc = call_cli(*args, "--out", out, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_prints_a_summary_and_writes_metrics(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--epochs", "1", "--defense", "random-erasing", "--defense-param", "scale=0.1,0.8",
                   "--quiet", "--out", out)
    summary = json.loads(proc.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["natural_accuracy"] == metrics["natural_accuracy"] > 0.5
    assert metrics["defense_params"]["scale"] == [0.1, 0.8]
    assert json.loads((out / "config.json").read_text())["config"]["defense_params"] == {"scale": [0.1, 0.8]}
