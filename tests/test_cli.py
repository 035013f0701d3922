import os
import re
import subprocess
import sys

import numpy as np
import pytest

from spectral_lab import cli
from spectral_lab.experiments.grokking import checkpoint_path
from spectral_lab.record import RunRecord

# a tiny grokking run, made from the quick preset with --set overrides
TINY = [
    "--set",
    "p=7",
    "--set",
    "d_model=8",
    "--set",
    "n_heads=2",
    "--set",
    "d_mlp=16",
    "--set",
    "steps=30",
    "--set",
    "eval_every=5",
    "--set",
    "track_every=10",
    "--set",
    "checkpoint_every=10",
]


def run(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_run_load_resume_round_trip(tmp_path, capsys):
    out = tmp_path / "runs" / "tiny.npz"
    status, stdout, _ = run(
        capsys, "run", "grokking", "--preset", "quick", "--device", "cpu", "--out", str(out), *TINY
    )
    assert status == 0 and "RunRecord(4 snapshots" in stdout
    record = RunRecord.load(out)
    assert record.steps.tolist() == [0, 10, 20, 30]
    # --set of science fields makes a custom run: never labelled "quick"
    assert (
        record.meta["preset"] == "custom"
        and record.config["p"] == 7
        and record.config["device"] == "cpu"
    )
    assert checkpoint_path(out).exists()

    # resuming a finished run loads both files and leaves the record as it was
    status, _, _ = run(
        capsys, "run", "grokking", "--device", "cpu", "--out", str(out), "--resume", *TINY
    )
    assert status == 0
    again = RunRecord.load(out)
    np.testing.assert_array_equal(again.norm_eff_rank(), record.norm_eff_rank())

    # resuming after more steps were asked for is refused: the configs differ
    status, _, err = run(
        capsys,
        "run",
        "grokking",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--resume",
        *TINY,
        "--set",
        "steps=40",
    )
    assert status == 2 and "steps: this run 40, the record 30" in err


def test_an_existing_record_is_not_overwritten_by_accident(tmp_path, capsys):
    out = tmp_path / "tiny.npz"
    assert run(capsys, "run", "grokking", "--out", str(out), *TINY)[0] == 0
    status, _, err = run(capsys, "run", "grokking", "--out", str(out), *TINY)
    assert status == 2 and "already exists" in err and "--resume" in err and "--overwrite" in err
    assert run(capsys, "run", "grokking", "--out", str(out), "--overwrite", *TINY)[0] == 0


def test_sweep_writes_one_record_per_weight_decay(tmp_path, capsys):
    out = tmp_path / "sweep"
    status, stdout, _ = run(
        capsys, "run", "weight_decay", "--out", str(out), *TINY, "--set", "weight_decays=0,1"
    )
    assert status == 0 and stdout.count("RunRecord(") == 2
    names = sorted(p.name for p in out.iterdir())
    assert [name.split("-")[0] for name in names] == [
        "wd_0",
        "wd_1",
    ]  # checkpoints went with partial/
    assert RunRecord.load(out / names[1]).config["weight_decay"] == 1.0


def test_sweep_command_runs_the_rest_and_keeps_what_is_there(tmp_path, capsys):
    out = tmp_path / "wd"
    argv = [
        "sweep",
        "weight_decay",
        "--device",
        "cpu",
        "--out",
        str(out),
        *TINY,
        "--set",
        "weight_decays=0,1",
    ]
    status, stdout, _ = run(capsys, *argv)
    assert status == 0 and stdout.count("RunRecord(") == 2
    first, second = sorted(out.iterdir())
    kept = second.stat().st_mtime_ns
    first.unlink()  # as if the sweep had been interrupted
    status, stdout, _ = run(capsys, *argv, "--engine", "local", "--workers", "1")
    assert status == 0 and first.exists() and second.stat().st_mtime_ns == kept
    np.testing.assert_array_equal(RunRecord.load(first).steps, [0, 10, 20, 30])


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["sweep", "grokking"],
            "grokking is one run: use `run grokking`; experiments that sweep: connectivity, "
            "weight_decay",
        ),
        (["sweep", "nope"], "unknown experiment 'nope'"),
        (["sweep", "weight_decay", "--engine", "dask"], "--engine dask needs --address"),
        (
            ["sweep", "weight_decay", "--address", "tcp://127.0.0.1:8786"],
            "--address is for --engine dask or ray",
        ),
        (
            ["sweep", "weight_decay", "--engine", "local", "--workers", "0"],
            "workers must be a positive integer",
        ),
        (["sweep", "weight_decay", "--preset", "huge"], "unknown preset 'huge' for weight_decay"),
    ],
)
def test_sweep_command_rejects_bad_input(capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == cli.USAGE_ERROR and message in err and "Traceback" not in err


def test_sweep_command_without_dask_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    status, _, err = run(
        capsys, "sweep", "weight_decay", "--engine", "local", "--out", str(tmp_path), *TINY
    )
    assert status == cli.USAGE_ERROR and 'pip install -e ".[dask]"' in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "grokking", "--preset", "huge"],
            "unknown preset 'huge' for grokking; presets: quick, quick_no_wd",
        ),
        (
            ["run", "grokking", "--set", "learning_rate=1"],
            "unknown setting 'learning_rate'.*settings: preset, model",
        ),
        (["run", "grokking", "--set", "lr=fast"], "--set lr=fast: lr must be a number"),
        (["run", "grokking", "--set", "lr"], "--set expects key=value"),
        (["run", "grokking", "--set", "n_heads=3"], "must divide d_model"),
        (["run", "grokking", "--device", "tpu"], "unknown device 'tpu'"),
        (
            ["run", "grokking", "--resume", "--out", "nowhere/none.npz"],
            "nothing to resume at nowhere/none.npz",
        ),
        (["run", "grokking", "--resume", "--overwrite"], "choose one"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_unknown_experiment_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "memorisation"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'memorisation'" in capsys.readouterr().err


def test_resume_without_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "tiny.npz"
    assert run(capsys, "run", "grokking", "--out", str(out), *TINY)[0] == 0
    checkpoint_path(out).unlink()
    status, _, err = run(capsys, "run", "grokking", "--out", str(out), "--resume", *TINY)
    assert status == 2 and "tiny.ckpt.pt not found" in err


def test_interrupt_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(
        cli.EXPERIMENTS, "grokking", cli.EXPERIMENTS["grokking"]._replace(run=interrupted)
    )
    status, _, err = run(capsys, "run", "grokking", "--out", str(tmp_path / "x.npz"))
    assert status == 130 and "--out " in err and err.rstrip().endswith("--resume")


def test_list(capsys):
    status, stdout, _ = run(capsys, "list")
    assert (
        status == 0
        and "grokking: GrokkingConfig" in stdout
        and "weight_decay: WeightDecaySweep" in stdout
    )


def test_python_dash_m(tmp_path):
    env = dict(os.environ, CI="true")
    done = subprocess.run(
        [sys.executable, "-m", "spectral_lab", "run", "grokking", "--preset", "nope"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert (
        done.returncode == 2
        and "unknown preset 'nope'" in done.stderr
        and "Traceback" not in done.stderr
    )


def test_memorization_writes_one_record_per_fraction_and_resumes_run_by_run(tmp_path, capsys):
    out = tmp_path / "memo"
    tiny = [
        "--set",
        "dataset=digits",
        "--set",
        "hidden=16,16",
        "--set",
        "epochs=1",
        "--set",
        "batch_size=64",
        "--set",
        "eval_every=7",
        "--set",
        "track_every=21",
        "--set",
        "label_fractions=0,1",
    ]
    status, stdout, _ = run(
        capsys,
        "run",
        "memorization",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--out",
        str(out),
        *tiny,
    )
    assert status == 0 and stdout.count("final test acc") == 2
    names = sorted(p.name for p in out.iterdir())  # labels_<fraction>-<config key>.npz
    assert [name.split("-")[0] for name in names] == ["labels_0", "labels_1"]
    true_labels, random_labels = (out / name for name in names)
    first = RunRecord.load(random_labels)
    assert first.config["label_noise"] == 1.0 and first.config["dataset"] == "digits"
    status, _, stderr = run(
        capsys,
        "run",
        "memorization",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--out",
        str(out),
        *tiny,
    )
    assert status == cli.USAGE_ERROR and "already exists: add --resume" in stderr
    true_labels.unlink()  # an interrupted sweep: one run is missing
    before = random_labels.stat().st_mtime_ns
    status, _, _ = run(
        capsys,
        "run",
        "memorization",
        "--preset",
        "quick",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--resume",
        *tiny,
    )
    assert status == 0 and (true_labels).exists()
    assert (random_labels).stat().st_mtime_ns == before  # the finished run was kept, not retrained


def test_sweep_connectivity_keeps_one_result_per_job_and_prints_the_table(tmp_path, capsys):
    tiny = [
        "--set",
        "epochs=2",
        "--set",
        "hidden=32,32",
        "--set",
        "split_steps=0,100",
        "--set",
        "etas=2",
        "--set",
        "other_seeds=1",
    ]
    status, stdout, _ = run(
        capsys, "sweep", "connectivity", "--device", "cpu", "--out", str(tmp_path), *tiny
    )
    assert status == 0 and "loss barrier" in stdout and len(stdout.strip().splitlines()) == 4
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [
        "other_1",
        "trunk_0",
        "trunk_0",
    ]
