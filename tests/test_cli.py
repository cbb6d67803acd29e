"""The command line as a user types it: a bad config, value, name or path is one line naming it and exit status 2
(as argparse does, no traceback); flags and dotted overrides mix in any order."""

import importlib
import re
from pathlib import Path

import benchmark
import evaluate as evaluate_script
import pretrain
import pytest
import reproduce  # noqa: E402

CASES = {
    "unknown config": (pretrain, ["--config", "nope"], r"config 'nope' not found: .*fmnist_vit_tiny"),
    "bad value": (pretrain, ["optim.lr=abc", "--dry-run"], r"config key 'optim.lr' expects float, got 'abc'"),
    "unknown key": (pretrain, ["optim.lrr=1e-3"], r"unknown config key 'optim.lrr'; did you mean lr"),
    "out of range": (pretrain, ["optim.global_batch=0", "--dry-run"], r"optim.global_batch=0 must lie in"),
    "bad world size": (pretrain, ["--dry-run", "--world-size", "0"], r"--world-size 0 must be at least 1"),
    "missing resume folder": (pretrain, ["--resume", "/nonexistent/ckpt"], r"--resume /nonexistent/ckpt: no such"),
    "data path without the data": (pretrain, ["--data", "/nonexistent", "--no-eval"],
                                   r"/nonexistent \(root argument\): no such folder"),
    "evaluate missing path": (evaluate_script, ["/nonexistent"], r"/nonexistent is neither a file nor a folder"),
    "evaluate zero per class": (evaluate_script, ["runs/x", "--per-class", "0"], r"--per-class 0 must be at least 1"),
    "reproduce unknown group": (reproduce, ["--groups", "nope"], r"unknown group\(s\) nope; choose from architectures"),
    "reproduce unknown checkpoint": (reproduce, ["--groups", "course_checkpoints", "--checkpoints", "ijepa,vit"],
                                     r"unknown checkpoint\(s\) vit; choose from ijepa, mae, invariant"),
    "reproduce zero seeds": (reproduce, ["--seeds", "0"], r"--seeds 0 must be at least 1"),
    "benchmark zero batch": (benchmark, ["step", "--batch", "0"], r"--batch 0 must be at least 1"),
    "benchmark negative warmup": (benchmark, ["masks", "--warmup", "-1"], r"--warmup -1 must be at least 0"),
    "override not valid YAML": (pretrain, ["optim.ema=[0.9", "--dry-run"],
                                r"the value of override 'optim.ema=\[0.9' is not valid YAML, line 1 column 5: expected ','"),
    "override mapping not closed": (pretrain, ["optim.lr={a", "--dry-run"],
                                    r"the value of override 'optim.lr=\{a' is not valid YAML, line 1 column 3"),
}  # fmt: skip


@pytest.mark.parametrize("script, argv, message", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_and_exit_status_2(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ": error: " in err and err.lstrip().startswith("usage:")  # argparse's usage line, then the error
    assert re.search(message, err), err


def test_a_config_file_that_is_not_yaml_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: {name: ijepa}\noptim: [\n")
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["--config", str(broken), "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if ": error: " in line]) == 1
    assert f"config file {broken} is not valid YAML, line 3 column 1: expected the node content" in err


def test_overrides_and_flags_mix_in_any_order(capsys):
    info = pretrain.main(
        ["optim.lr=5e-4", "--dry-run", "optim.max_steps=7", "--world-size", "2", "optim.epochs=3"]
    )
    assert info["total_steps"] == 7 and info["world_size"] == 2
    args = pretrain.parse_args(["optim.lr=5e-4", "--no-eval", "optim.max_steps=1"])
    assert args.no_eval and args.overrides == ["optim.lr=5e-4", "optim.max_steps=1"]


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "3/2", "0/0"])
def test_reproduce_rejects_a_bad_shard_in_one_line(shard, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.parse_args(["--shard", shard])
    assert exit_info.value.code == 2
    assert f"--shard {shard!r} must be i/n" in capsys.readouterr().err


def test_reproduce_reads_a_shard_as_index_and_count():
    assert reproduce.parse_args(["--shard", "1/2"]).shard == (1, 2)
    assert reproduce.parse_args([]).shard == (0, 1)


@pytest.mark.parametrize("script", ["pretrain", "train_decoder", "reproduce", "evaluate"])
def test_help_examples_each_start_with_a_command(script, capsys):
    """The usage examples that `--help` prints (the indented lines of the script's docstring, its description)
    stay one command per line."""
    module = importlib.import_module(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    # the docstring is the help's description
    assert module.__doc__.splitlines()[0] in capsys.readouterr().out
    lines = module.__doc__.splitlines()
    examples = [line.strip() for line in lines if line.startswith("    ") and line.strip()]
    assert examples, f"{script} --help shows no usage example"
    for previous, line in zip(["", *examples], examples):
        if not previous.endswith("\\"):  # a line after a trailing backslash continues its command
            assert line.split()[0] in ("python", "accelerate", "torchrun", "sbatch"), f"{script}: {line!r}"


def test_ci_runs_the_readme_quick_start_set_up_and_test_commands():
    """CI checks the path a newcomer takes: the quick start's set-up command, then its test command."""
    import re
    import subprocess

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    setup, test = commands[0], next(c for c in commands if c.startswith("pytest"))
    ci = [line.split("#")[0].strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    assert setup == "bash scripts/setup.sh" and setup in ci
    assert ci[-1] == test == "pytest"
    subprocess.run(["bash", "-n", str(root / "scripts" / "setup.sh")], check=True)  # it parses
