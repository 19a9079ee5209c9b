"""The batch engine on a local Ray cluster (2 CPUs, 2 logical GPUs): the same volumes as the local executor, also
when a worker is killed during a scan; a changed input recomputed; a cluster joined with --address."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading

import numpy as np
import pytest

from test_batch import cli, volumes, wait_for, worker_of, write_inputs

from cbct.batch import run_batch

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module; HOME and RAY_TMPDIR in a temporary folder (short: Ray's socket paths)."""
    home = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR")}
    os.environ.update(HOME=home, RAY_TMPDIR=home)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_inputs")
    manifest, pipeline = write_inputs(folder, slow={"size": 40, "views": 200})
    out = folder / "local"
    assert run_batch(manifest, pipeline, out, workers=2)["counts"]["ok"] == 6
    return manifest, pipeline, volumes(out)


def test_ray_matches_the_local_executor_bit_for_bit(cluster, local_reference, tmp_path):
    manifest, pipeline, reference = local_reference
    out = tmp_path / "ray"
    summary = run_batch(manifest, pipeline, out, executor="ray", gpus_per_scan=0.5)
    assert summary["executor"] == "ray" and summary["counts"] == {"ok": 6, "skipped": 0, "failed": 0, "pending": 0}
    got = volumes(out)
    assert sorted(got) == sorted(reference)
    for key in reference:
        np.testing.assert_array_equal(got[key], reference[key])
    workers = {json.loads((out / f"s{i}" / "result.json").read_text())["worker"]["pid"] for i in range(6)}
    assert os.getpid() not in workers
    assert ray.is_initialized()  # a cluster the caller started is left running
    again = run_batch(manifest, pipeline, out, executor="ray", gpus_per_scan=0.5)
    assert again["counts"]["skipped"] == 6


def test_ray_retries_a_scan_whose_worker_was_killed(cluster, local_reference, tmp_path):
    manifest, pipeline, reference = local_reference
    out = tmp_path / "ray"
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(summary=run_batch(manifest, pipeline, out, executor="ray")))
    runner.start()
    victim = wait_for(lambda: worker_of(out, "s0"), timeout=120)
    os.kill(victim["pid"], signal.SIGKILL)
    runner.join(timeout=180)
    assert box["summary"]["counts"]["ok"] == 6, box["summary"]
    record = json.loads((out / "s0" / "result.json").read_text())
    assert record["worker"]["attempt"] == 2 and record["worker"]["pid"] != victim["pid"]
    got = volumes(out)
    for key in reference:
        np.testing.assert_array_equal(got[key], reference[key])
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_cli_joins_the_cluster_and_recomputes_a_changed_input(cluster, local_reference, tmp_path):
    manifest, pipeline, reference = local_reference
    out = tmp_path / "ray"
    text = manifest.read_text().replace("seed: 3", "seed: 33")  # scan s3 changes
    changed = tmp_path / "changed.yaml"
    shutil.copy(manifest, tmp_path / "same.yaml")
    changed.write_text(text)
    proc = cli("run", str(tmp_path / "same.yaml"), "-p", str(pipeline), "-o", str(out), "--executor", "ray",
               "--address", cluster, "--only", "s1", "s3", "--quiet")
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["counts"]["ok"] == 2
    np.testing.assert_array_equal(volumes(out)["s3"], reference["s3"])
    summary = run_batch(changed, pipeline, out, executor="ray", only=["s1", "s3"])
    status = {s["id"]: s for s in summary["scans"]}
    assert status["s1"]["status"] == "skipped"
    assert status["s3"]["status"] == "ok" and status["s3"]["reason"] == "recomputed: entry changed"
    assert not np.array_equal(volumes(out)["s3"], reference["s3"])


def test_both_executors_report_each_stage(cluster, local_reference, tmp_path):
    from cbct.batch import LocalExecutor, RayExecutor, RunSettings, make_plan
    from cbct.io.manifest import load_manifest
    from cbct.pipeline import load_pipeline

    manifest, pipeline, _ = local_reference
    pipe = load_pipeline(pipeline)
    jobs = make_plan(load_manifest(manifest), pipe, only=["s1"])
    for executor in (RayExecutor(), LocalExecutor()):
        stages, outcomes = [], []
        out = tmp_path / executor.name
        out.mkdir()
        executor.start()
        try:
            executor.execute(jobs, RunSettings(out=out, pipeline=pipe, run_id="r", manifest=str(manifest)), force=False,
                             on_outcome=outcomes.append, on_stage=lambda *event: stages.append(event))
        finally:
            executor.close()
        assert [o["status"] for o in outcomes] == ["ok"]
        assert stages == [("s1", 0, 3, "preprocess"), ("s1", 1, 3, "fdk"), ("s1", 2, 3, "export")], executor.name
