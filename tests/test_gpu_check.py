"""tools/gpu_check.py, the one prepared script a lent GPU runs (issue 19), run here at smoke
scale on the CPU: every job runs, records come out in the shipped format, the summary says what
ran and how long each took, and the estimate of a run's GPU time is made of measured parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    # the timeout guards against a hang: about a minute on a quiet machine, over 300 s at load 9
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def test_the_smoke_run_does_every_job_and_writes_shipped_records(smoke):
    out, summary = smoke
    jobs = [job["job"] for job in summary["jobs"]]
    assert jobs == ["gpu tests", *gpu_check.shipments(smoke=True), "tracking benchmark"]
    assert all(job.get("finished") and job["returncode"] == 0 for job in summary["jobs"]), summary[
        "jobs"
    ]
    from spectral_lab.experiments import shipped

    manifest = shipped.read_manifest(out / "records")["records"]
    assert len(manifest) == 3
    assert {e["device"] for e in manifest.values()} == {"cpu"}
    assert {e["config"]["steps"] for e in manifest.values()} == {gpu_check.SMOKE_STEPS}
    rows = summary["records"]
    assert len(rows) == 3 and all(row["bytes"] > 0 for row in rows)
    assert "steps to 99 % val acc" in (out / "summary.md").read_text()


def test_a_runs_gpu_time_is_estimated_from_its_flops_and_kernel_launches():
    shipment = gpu_check.shipments(smoke=True)["grokking-full"]
    guess = gpu_check.estimate(shipment)
    assert guess["flops_per_step"] > 1e6 and 50 < guess["launches_per_step"] < 2000
    step = max(guess["flops_per_step"] / gpu_check.GPU_FLOPS,
               guess["launches_per_step"] * gpu_check.LAUNCH_SECONDS)  # fmt: skip
    assert guess["gpu_step_s"] == step
    assert guess["estimated_s"] >= guess["steps"] * step
    # the paper's model does far more arithmetic per step than the quick one
    paper = gpu_check.estimate(gpu_check.shipments(smoke=False)["grokking-full"])
    assert paper["flops_per_step"] > 10 * guess["flops_per_step"]


def test_runs_already_shipped_are_skipped_so_each_gpu_session_continues(monkeypatch, tmp_path):
    """A lent GPU's minutes fit about two paper runs: a run whose record records/ ships is not
    trained again (nothing is started here, so no estimate or process is needed)."""
    from spectral_lab.experiments import shipped

    monkeypatch.setattr(shipped, "available", lambda name, records=None: [0])
    results = gpu_check.paper_runs(
        smoke=False, out=tmp_path, clock=gpu_check.Clock(60), reserve=0, env={}
    )
    assert [r["job"] for r in results] == list(shipped.PAPER_SHIPMENTS)
    assert all(r["started"] is False and r["why"] == "already in records/" for r in results)
