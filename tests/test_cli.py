import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import spectral_lab.experiments.grokking as grokking
from spectral_lab import cli
from spectral_lab.experiments import EXPERIMENTS
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
        (["run", "grokking", "--set", "preset=full"], "use --preset full"),
        (["sweep", "weight_decay", "--set", "preset=full"], "use --preset full"),
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


def test_an_interrupt_before_the_first_checkpoint_promises_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(EXPERIMENTS, "grokking", EXPERIMENTS["grokking"]._replace(run=interrupted))
    status, _, err = run(capsys, "run", "grokking", "--out", str(tmp_path / "x.npz"))
    assert status == 130 and "the last checkpoint is kept" not in err
    assert "nothing kept yet: the first checkpoint comes at step 500" in err
    assert err.rstrip().endswith(f"python -m spectral_lab run grokking --out {tmp_path / 'x.npz'}")


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


# ---- names without torch
# --------------------------------------------------------------------------
def test_the_catalogue_is_the_registry():
    """The torch-free copy of the registry's names (cli.CATALOGUE) says what the registry says."""
    from spectral_lab.sweeps import ENGINES

    assert list(cli.CATALOGUE) == list(EXPERIMENTS) and cli.ENGINES == ENGINES
    assert cli.EXPERIMENTS is EXPERIMENTS  # imported on first use, not with the module
    for name, experiment in EXPERIMENTS.items():
        cls, known = experiment.config_class, cli.CATALOGUE[name]
        assert known.config_class == cls.__name__, name
        assert known.presets == tuple(cls.presets()), name
        assert known.settings == tuple(f.name for f in fields(cls)), name
        assert known.suffix == experiment.suffix, name
        assert known.sweeps == (experiment.sweep is not None), name


USAGE_ERRORS = [
    ["run", "grokking", "--preset", "nope"],
    ["run", "arch_lstm", "--set", "learning_rate=1"],
    ["run", "grokking", "--set", "preset=full"],
    ["run", "memorisation"],
    ["sweep", "grokking"],
    ["sweep", "weight_decay", "--preset", "huge"],
    ["run", "grokking", "--resume", "--overwrite"],
    ["run", "grokking", "--out", "some/folder/"],
]

# The command line's module loaded without the package's face (spectral_lab/__init__.py imports
# torch): what ``python -m spectral_lab`` costs once the face imports lazily.
WITHOUT_THE_FACE = """
import json, sys, time, types
started = time.perf_counter()
package = types.ModuleType("spectral_lab")
package.__path__ = [sys.argv[1]]
sys.modules["spectral_lab"] = package
from spectral_lab import cli
statuses = []
for argv in json.loads(sys.argv[2]):
    try:
        statuses.append(cli.main(argv))
    except SystemExit as exit:
        statuses.append(exit.code)
print(json.dumps({"torch": "torch" in sys.modules, "statuses": statuses,
                  "seconds": time.perf_counter() - started}))
"""


def test_usage_errors_answer_without_importing_torch(tmp_path):
    package = Path(cli.__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_FACE, str(package), json.dumps(USAGE_ERRORS)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["statuses"] == [2] * len(USAGE_ERRORS), done.stderr
    assert not answer["torch"], "a usage error imported torch"
    assert "Traceback" not in done.stderr and done.stderr.count("error: ") == len(USAGE_ERRORS)


# ---- output paths, checked before training
# ------------------------------------------------------
def bad_out(capsys, out: str, *more):
    status, stdout, err = run(capsys, "run", "grokking", "--out", out, *TINY, *more)
    assert status == cli.USAGE_ERROR and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_folder_is_not_a_record_path(tmp_path, capsys):
    assert "is a folder, but grokking writes one record file" in bad_out(capsys, str(tmp_path))
    err = bad_out(capsys, f"{tmp_path}/new/")
    assert "is a folder" in err and "--out " in err and not (tmp_path / "new").exists()


def test_a_path_under_a_file_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    err = bad_out(capsys, str(tmp_path / "file.txt" / "sub" / "run.npz"))
    assert f"{tmp_path / 'file.txt'} is a file, not a folder" in err


def test_a_folder_experiment_refuses_a_file(tmp_path, capsys):
    (tmp_path / "wd").write_text("x")
    status, _, err = run(capsys, "run", "weight_decay", "--out", str(tmp_path / "wd"), *TINY)
    assert status == 2 and "is a file, but weight_decay writes a folder of runs" in err


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_unwritable_folder_is_found_before_training(tmp_path, capsys, monkeypatch, code):
    trained = []
    monkeypatch.setitem(
        EXPERIMENTS, "grokking", EXPERIMENTS["grokking"]._replace(run=lambda *a, **k: trained)
    )

    def refuse(*args, **kwargs):  # the machine runs tests as root: a read-only disk is simulated
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", refuse)
    err = bad_out(capsys, str(tmp_path / "runs" / "x.npz"))
    assert f"cannot write to --out {tmp_path / 'runs' / 'x.npz'}: {os.strerror(code)}" in err
    assert trained == [] and not (tmp_path / "runs").exists()


def test_a_disk_that_fills_during_a_run_keeps_the_checkpoint_and_says_how_to_resume(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run.npz"
    argv = ["run", "grokking", "--device", "cpu", "--out", str(out), *TINY]
    written = []

    def fills(path, write):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        return grokking_atomic_write(path, write)

    grokking_atomic_write = grokking.atomic_write
    monkeypatch.setattr(grokking, "atomic_write", fills)
    status, _, err = run(capsys, *argv)
    assert status == 1 and "Traceback" not in err
    assert f"could not write {checkpoint_path(out)}: No space left on device" in err
    assert f"checkpoint at step 10 of 30 ({checkpoint_path(out)})" in err
    command = err.split("Continue with: ")[1].strip()
    assert command == shlex.join(["python", "-m", "spectral_lab", *argv, "--resume"])
    monkeypatch.undo()  # space freed: the printed command finishes the run
    assert cli.main(shlex.split(command)[3:]) == 0
    assert RunRecord.load(out).steps.tolist() == [0, 10, 20, 30]


# ---- interruptions tell the truth
# ---------------------------------------------------------------
LONG = [*TINY[:-6], "--set", "eval_every=10", "--set", "track_every=10", "--set", "steps=3000"]


def interrupt(tmp_path, signum: int, checkpoint_every: int):
    """A real ``python -m spectral_lab run`` sent ``signum`` after its first checkpoint (or, when
    that is far away, once training began); returns (status, stderr, argv)."""
    out = tmp_path / "run.npz"
    argv = ["run", "grokking", "--device", "cpu", "--out", str(out), *LONG]
    argv += ["--set", f"checkpoint_every={checkpoint_every}"]
    with subprocess.Popen(
        [sys.executable, "-m", "spectral_lab", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, CI="true"),
        cwd=tmp_path,
        # as from a terminal: a test worker may ignore SIGINT (a child inherits that, and Python
        # then never raises KeyboardInterrupt), so the command starts with the default handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        try:
            first = process.stderr.readline()  # "grokking (custom) on cpu -> ...": training begins
            assert "-> " in first, first
            deadline = time.monotonic() + 120
            while checkpoint_every < 3000 and not checkpoint_path(out).exists():
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            process.send_signal(signum)
            rest = process.stderr.read()
            status = process.wait(timeout=60)
        finally:
            process.kill()
    return status, first + rest, argv


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_first_checkpoint_names_it_and_the_command(tmp_path, signum):
    status, err, argv = interrupt(tmp_path, signum, checkpoint_every=20)
    assert status == 128 + signum and "Traceback" not in err, err
    step = int(re.search(r"kept: the record and checkpoint at step (\d+) of 3000", err)[1])
    assert step % 20 == 0 and step >= 20
    assert torch.load(checkpoint_path(tmp_path / "run.npz"), weights_only=True)["step"] == step
    command = shlex.join(["python", "-m", "spectral_lab", *argv, "--resume"])
    assert err.rstrip().endswith(f"Continue with: {command}")
    assert ("terminated (SIGTERM)" in err) == (signum == signal.SIGTERM)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_the_first_checkpoint_says_nothing_was_kept(tmp_path, signum):
    status, err, argv = interrupt(tmp_path, signum, checkpoint_every=3000)
    assert status == 128 + signum and "Traceback" not in err, err
    assert "nothing kept yet: the first checkpoint comes at step 3000" in err
    assert err.rstrip().endswith(shlex.join(["python", "-m", "spectral_lab", *argv]))
    assert not checkpoint_path(tmp_path / "run.npz").exists()


SWALLOWS_THE_FIRST_STOP = """
import sys, time
from spectral_lab import cli
from spectral_lab.experiments import EXPERIMENTS

def run(config, out, resume=False):  # as a library with a bare except would
    swallowed, deadline = False, time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if not swallowed:
                print("training", file=sys.stderr, flush=True)  # inside the try: signal now
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            if swallowed:
                raise
            swallowed = True
            print("swallowed", file=sys.stderr, flush=True)
    print("trained to the end", file=sys.stderr)

EXPERIMENTS["grokking"] = EXPERIMENTS["grokking"]._replace(run=run)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_run_that_swallowed_it_once(tmp_path, signum):
    """CI once saw a run sent SIGTERM just after it started train to the end and exit 0: code the
    run called swallowed the exception. The command raises it again until it is reported."""
    argv = ["run", "grokking", "--device", "cpu", "--out", str(tmp_path / "run.npz")]
    with subprocess.Popen(
        [sys.executable, "-c", SWALLOWS_THE_FIRST_STOP, *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, CI="true"),
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in interrupt()
    ) as process:
        try:
            assert "-> " in process.stderr.readline()
            assert process.stderr.readline() == "training\n"  # the swallowing loop has begun
            process.send_signal(signum)
            err = process.stderr.read()
            status = process.wait(timeout=60)
        finally:
            process.kill()
    assert status == 128 + signum and "Traceback" not in err, err
    assert "swallowed" in err and "trained to the end" not in err
    stopped = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    assert f"{stopped}; nothing kept yet" in err


def test_the_sigterm_handler_is_installed_only_while_a_command_runs():
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_list", lambda: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
        assert cli.main(["list"]) == 0
    assert seen[0] is not before and signal.getsignal(signal.SIGTERM) is before


# ---- architecture runs through the command line
# -------------------------------------------------
ARCH = ["--device", "cpu", "--set", "width=4", "--set", "steps=12", "--set", "eval_every=4"]
ARCH += ["--set", "track_every=4", "--set", "checkpoint_every=4"]


def test_an_arch_record_of_another_kind_is_not_resumed(tmp_path, capsys):
    out = str(tmp_path / "arch.npz")
    assert run(capsys, "run", "arch_convnet", "--out", out, *ARCH)[0] == 0
    status, stdout, err = run(capsys, "run", "arch_lstm", "--out", out, "--resume", *ARCH)
    assert status == 2 and stdout == "" and err.count("error: ") == 1  # after the start line
    assert "holds a run of model 'convnet', not 'lstm'" in err.splitlines()[-1]
    status, _, err = run(
        capsys, "run", "arch_convnet", "--out", out, "--resume", *ARCH, "--set", "seed=3"
    )
    assert status == 2 and "seed: this run 3, the record 0" in err


def test_an_interrupted_arch_run_says_what_was_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "arch.npz"
    argv = ["run", "arch_convnet", "--out", str(out), *ARCH]
    config_class = EXPERIMENTS["arch_convnet"].config_class
    batch = config_class.batch

    def stop_at_step_6(self, data, step, generator):
        if step == 6:
            raise KeyboardInterrupt
        return batch(self, data, step, generator)

    monkeypatch.setattr(config_class, "batch", stop_at_step_6)
    status, _, err = run(capsys, *argv)
    assert status == 130 and "kept: the record and checkpoint at step 4 of 12" in err
    monkeypatch.undo()
    command = err.split("Continue with: ")[1].strip()
    assert cli.main(shlex.split(command)[3:]) == 0
    assert RunRecord.load(out).steps.tolist() == [0, 4, 8, 12]


# ---- engines
# -------------------------------------------------------------------------------------
def test_gpus_on_a_machine_without_cuda_is_an_error(tmp_path, capsys, monkeypatch):
    argv = ["sweep", "weight_decay", "--engine", "local", "--gpus", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = run(capsys, *argv, *TINY)
    assert status == 2 and "--gpus 2: torch sees no CUDA GPU" in err and err.count("\n") == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    status, _, err = run(capsys, *argv, *TINY)
    assert status == 2 and "--gpus 2: torch sees only 1 CUDA GPU(s) here" in err


def test_an_unreachable_dask_scheduler_is_one_line_after_a_short_wait(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    argv = ["sweep", "weight_decay", "--engine", "dask", "--address", "tcp://127.0.0.1:1"]
    argv += ["--out", str(tmp_path / "wd"), *TINY, "--set", "weight_decays=1"]
    timeouts = []
    client = distributed.Client

    def observed(*args, **kwargs):
        import dask

        timeouts.append(dask.config.get("distributed.comm.timeouts.connect"))
        return client(*args, **kwargs)

    distributed.Client = observed
    try:
        status, _, err = run(capsys, *argv)
    finally:
        distributed.Client = client
    assert timeouts == [cli.DASK_CONNECT_TIMEOUT] and cli.DASK_CONNECT_TIMEOUT == "5s"
    assert status == 1 and err.count("\n") == 2 and "Traceback" not in err  # the start line + one
    assert "error: cannot reach the Dask scheduler at tcp://127.0.0.1:1: Timed out" in err


def test_an_unreachable_ray_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nPlease check ...")

    monkeypatch.setattr(ray, "init", unreachable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    argv = ["sweep", "weight_decay", "--engine", "ray", "--address", "ray://nowhere:10001"]
    status, _, err = run(capsys, *argv, "--out", str(tmp_path / "wd"), *TINY)
    assert status == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        "error: cannot reach the Ray cluster at ray://nowhere:10001: Could not find any running "
        "Ray instance.; check that it is running and that the address is right"
    )
