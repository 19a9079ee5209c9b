"""The batch engine with the local executor: fingerprints, locks, interrupted runs, sharding, worker deaths."""

from __future__ import annotations

import json
import re
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import cbct
from cbct.batch import LockedError, ResultStore, run_batch, shard
from cbct.batch.worker import WORKER_FILE
from cbct.cli import main

PIPELINE = {"name": "fdk_h5", "stages": [{"stage": "preprocess"}, {"stage": "fdk", "params": {"filter": "hann"}},
                                         {"stage": "export", "params": {"formats": ["hdf5"]}}]}


def write_inputs(folder: pathlib.Path, n: int = 6, *, size: int = 24, views: int = 36, slow: dict | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """A manifest of ``n`` small simulated scans (scan ``s{i}``; ``slow`` overrides the arguments of ``s0``) and an
    FDK pipeline that writes HDF5 only."""
    scans = []
    for i in range(n):
        spec = {"phantom": "dental" if i % 2 else "shepp-logan", "size": size, "views": views, "seed": i}
        if i == 0 and slow:
            spec.update(slow)
        scans.append({"id": f"s{i}", "simulate": spec})
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": "small", "version": 1, "scans": scans}, sort_keys=False))
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    return manifest, pipeline


def volumes(out: pathlib.Path) -> dict[str, np.ndarray]:
    """Every finished scan's reconstructed volume under ``out``."""
    return ResultStore(out).volumes()


def cli(*args: str, **kwargs) -> subprocess.Popen:
    """``cbct ARGS`` in a new process (its stdout is the summary JSON)."""
    return subprocess.Popen([sys.executable, "-m", "cbct.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def wait_for(predicate, timeout: float = 60.0, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def worker_of(out: pathlib.Path, scan_id: str) -> dict | None:
    """The worker record in the scan's temporary folder while it is being computed."""
    for tmp in out.glob(f".{scan_id}.tmp-*"):
        try:
            return json.loads((tmp / WORKER_FILE).read_text())
        except (OSError, ValueError):
            pass
    return None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch_inputs")
    return write_inputs(folder)


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The batch run once with one local worker (the reference volumes of the other tests)."""
    manifest, pipeline = inputs
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = run_batch(manifest, pipeline, out, workers=1)
    assert summary["counts"] == {"ok": 6, "skipped": 0, "failed": 0, "pending": 0}
    return out, volumes(out)


def test_two_workers_match_one_bit_for_bit_and_resume_skips(inputs, reference, tmp_path):
    manifest, pipeline = inputs
    ref_out, ref = reference
    out = tmp_path / "out"
    summary = cbct.run_batch(manifest, pipeline, out, workers=2)
    assert summary["run"]["status"] == "ok" and summary["counts"]["ok"] == 6
    got = volumes(out)
    assert sorted(got) == sorted(ref) == [f"s{i}" for i in range(6)]
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])
    pids = {json.loads((out / f"s{i}" / "result.json").read_text())["worker"]["pid"] for i in range(6)}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes did the work
    again = run_batch(manifest, pipeline, out, workers=2)
    assert again["counts"] == {"ok": 0, "skipped": 6, "failed": 0, "pending": 0}
    assert json.loads((out / "summary.json").read_text())["counts"] == again["counts"]
    record = json.loads((ref_out / "s1" / "result.json").read_text())
    assert set(record["fingerprint"]) == {"input", "entry", "pipeline", "weights", "cbct_version"}


def test_changed_input_or_entry_is_recomputed(tmp_path):
    assert main(["simulate", "--size", "24", "--views", "36", "--seed", "1", "--out", str(tmp_path / "a.h5")]) == 0
    assert main(["simulate", "--size", "24", "--views", "36", "--seed", "2", "--out", str(tmp_path / "b.h5")]) == 0
    manifest = tmp_path / "m.yaml"
    doc = {"scans": [{"id": "a", "path": "a.h5"}, {"id": "b", "path": "b.h5"}]}
    manifest.write_text(yaml.safe_dump(doc))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    out = tmp_path / "out"
    assert run_batch(manifest, pipeline, out)["counts"]["ok"] == 2
    before = volumes(out)
    # the same path, another scan (the old code served the old result)
    assert main(["simulate", "--phantom", "dental", "--size", "24", "--views", "36", "--out", str(tmp_path / "a.h5"),
                 "--force"]) == 0
    summary = run_batch(manifest, pipeline, out)
    status = {s["id"]: s for s in summary["scans"]}
    assert status["a"]["status"] == "ok" and status["a"]["reason"] == "recomputed: input changed"
    assert status["b"]["status"] == "skipped"
    assert not np.array_equal(volumes(out)["a"], before["a"])
    # a changed manifest entry (another grid) is recomputed too
    doc["scans"][1]["volume"] = {"shape": [8, 16, 16], "voxel_size": 4.0}
    manifest.write_text(yaml.safe_dump(doc))
    status = {s["id"]: s for s in run_batch(manifest, pipeline, out)["scans"]}
    assert status["b"]["reason"] == "recomputed: input, entry changed" or status["b"]["reason"] == "recomputed: entry changed"
    assert volumes(out)["b"].shape == (8, 16, 16) and status["a"]["status"] == "skipped"
    # an input that changes into a broken one: the scan fails and the old result is flagged as out of date
    (tmp_path / "a.h5").write_bytes((tmp_path / "a.h5").read_bytes()[:5000])
    item = run_batch(manifest, pipeline, out)["scans"][0]
    assert item["status"] == "failed" and "truncated or corrupt" in item["error"]
    assert "whose fingerprint no longer matches: it is out of date" in item["stale_result"]


def test_second_run_refuses_naming_the_holder_or_waits(inputs, tmp_path, capsys):
    manifest, pipeline = inputs
    out = tmp_path / "out"
    holder = ResultStore(out)
    holder.lock(info={"pid": 4242, "host": "ct-node-7", "started": "2026-01-01T00:00:00+00:00", "command": "cbct run x"})
    try:
        assert main(["run", str(manifest), "-p", str(pipeline), "-o", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "in use by pid 4242 on ct-node-7" in err and "--wait" in err
        with pytest.raises(LockedError, match="in use by pid 4242"):
            run_batch(manifest, pipeline, out, wait=0.3)
    finally:
        holder.unlock()
    assert not (out / "summary.json").exists()


def test_two_concurrent_runs_compute_each_scan_once(inputs, tmp_path):
    manifest, pipeline = inputs
    out = tmp_path / "out"
    runs = [cli("run", str(manifest), "-p", str(pipeline), "-o", str(out), "--wait", "-1", "--quiet") for _ in range(2)]
    summaries = []
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    counts = sorted((s["counts"]["ok"], s["counts"]["skipped"]) for s in summaries)
    assert counts == [(0, 6), (6, 0)]  # one computed everything, the other waited and found it done
    run_ids = {json.loads((out / f"s{i}" / "result.json").read_text())["run_id"] for i in range(6)}
    assert len(run_ids) == 1
    final = json.loads((out / "summary.json").read_text())
    assert final["run"]["status"] == "ok" and final["counts"]["failed"] == 0 and final["counts"]["pending"] == 0


def test_sigkilled_run_resumes_cleanly_and_sigterm_is_recorded(tmp_path, reference):
    manifest, pipeline = write_inputs(tmp_path, slow={"size": 48, "views": 240})
    out = tmp_path / "out"
    proc = cli("run", str(manifest), "-p", str(pipeline), "-o", str(out), "--quiet")
    wait_for(lambda: worker_of(out, "s0"))
    proc.kill()  # SIGKILL: no handler runs; the worker follows its parent
    proc.communicate(timeout=30)
    assert list(out.glob(".s0.tmp-*"))  # what the killed run left
    assert json.loads((out / "summary.json").read_text())["run"]["status"] == "running"
    summary = run_batch(manifest, pipeline, out, workers=2)
    assert summary["run"]["status"] == "ok" and summary["counts"]["ok"] + summary["counts"]["skipped"] == 6
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    ref = reference[1]
    got = volumes(out)
    for key in ("s1", "s2", "s3", "s4", "s5"):
        np.testing.assert_array_equal(got[key], ref[key])

    # SIGTERM: workers stopped, temporaries removed, the summary says so
    proc = cli("run", str(manifest), "-p", str(pipeline), "-o", str(out), "--force", "--quiet")
    wait_for(lambda: worker_of(out, "s0"))
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    final = json.loads((out / "summary.json").read_text())
    assert final["run"]["status"] == "interrupted" and final["run"]["finished"]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_killed_worker_is_replaced_and_its_scan_retried(tmp_path, reference):
    manifest, pipeline = write_inputs(tmp_path, slow={"size": 48, "views": 240})
    out = tmp_path / "out"
    proc = cli("run", str(manifest), "-p", str(pipeline), "-o", str(out), "--quiet")
    victim = wait_for(lambda: worker_of(out, "s0"))
    os.kill(victim["pid"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["counts"]["ok"] == 6
    record = json.loads((out / "s0" / "result.json").read_text())
    assert record["worker"]["attempt"] == 2 and record["worker"]["pid"] != victim["pid"]
    for key in ("s1", "s2", "s3", "s4", "s5"):
        np.testing.assert_array_equal(volumes(out)[key], reference[1][key])


def test_sharded_parts_share_one_folder(inputs, reference, tmp_path):
    manifest, pipeline = inputs
    assert shard(["a", "b", "c", "d", "e"], 2, 1) == ["b", "d"]
    with pytest.raises(ValueError, match="part_id must be"):
        shard(["a"], 2, 2)
    out = tmp_path / "out"
    first = run_batch(manifest, pipeline, out, num_parts=2, part_id=0)
    assert first["counts"] == {"ok": 3, "skipped": 0, "failed": 0, "pending": 3}
    assert [s["id"] for s in first["scans"] if s["status"] == "ok"] == ["s0", "s2", "s4"]
    # while part 1 is held by another run: a whole run is refused naming it, part 1 too, part 0 may run
    other = ResultStore(out)
    other.lock(part=(1, 2), info={"pid": 777, "host": "node-b", "started": "now", "command": "cbct run --part-id 1"})
    try:
        with pytest.raises(LockedError, match="in use by pid 777 on node-b"):
            run_batch(manifest, pipeline, out)
        with pytest.raises(LockedError, match="part 1 of 2 of this output folder is in use by pid 777"):
            run_batch(manifest, pipeline, out, num_parts=2, part_id=1)
        assert run_batch(manifest, pipeline, out, num_parts=2, part_id=0)["counts"]["skipped"] == 3
    finally:
        other.unlock()
    second = run_batch(manifest, pipeline, out, num_parts=2, part_id=1)
    assert second["counts"] == {"ok": 3, "skipped": 3, "failed": 0, "pending": 0}
    for key, vol in volumes(out).items():
        np.testing.assert_array_equal(vol, reference[1][key])


def test_a_stage_that_cannot_reach_a_worker_fails_that_scan_clearly(inputs, tmp_path):
    from cbct.pipeline import Pipeline, Stage

    manifest, _ = inputs
    pipe = Pipeline("local", [Stage(lambda state: state, label="mine"), Stage("preprocess"), Stage("fdk"),
                              Stage("export", {"formats": ["hdf5"]})])
    summary = run_batch(manifest, pipe, tmp_path / "out", only=["s1"])
    item = summary["scans"][0]
    assert item["status"] == "failed" and "could not run scan 's1' in a worker process" in item["error"]
    assert "pickle" in item["error"].lower()


def test_final_table_and_quiet(inputs, reference, tmp_path, capsys):
    manifest, pipeline = inputs
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest.read_text().replace("size: 24", "size: 24\n    raw: true\n    noise: 2.0", 1))
    assert main(["run", str(bad), "-p", str(pipeline), "-o", str(out), "--only", "s0", "s1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^scan +status +seconds +detail$", err, re.MULTILINE)
    assert re.search(r"^s0 +failed +[\d.]+ +PipelineError: scan 's0': stage 1/3 'preprocess' failed: ValueError: \d+ pixels",
                     err, re.MULTILINE)
    assert re.search(r"^s1 +ok +[\d.]+ +new$", err, re.MULTILINE)
    assert "1 finished, 0 skipped, 1 failed, 0 pending (run failed; summary: " in err
    assert main(["run", str(bad), "-p", str(pipeline), "-o", str(out), "--only", "s1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["counts"]["skipped"] == 1
