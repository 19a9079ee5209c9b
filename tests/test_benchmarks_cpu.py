"""Smoke test of the CPU benchmark against RTK (benchmarks/cpu_vs_rtk.py) at a tiny size."""

from __future__ import annotations

import json
import pathlib

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("cpu_vs_rtk")


def test_benchmark_writes_its_json(bench, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "result.json"
    report = bench.main(["--size", "24", "--views", "20", "--repeats", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["sizes"]["volume"] == [24, 24, 24]
    assert saved["sizes"]["views"] == 20
    assert saved["sizes"]["detector"] == [24, 24]
    assert saved["repeats"] == 2
    machine = saved["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert len(machine["load_average_before"]) == 3 and len(machine["load_average_after"]) == 3
    for name in ("numpy", "numba", "itk-rtk"):
        assert saved["versions"][name] != "not installed"
    for section, ref in (("fdk", "rtk"), ("projector", "rtk_joseph")):
        entry = saved[section]
        for who in ("ours", ref):
            t = entry[who]
            assert len(t["times_s"]) == 2
            assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"]
        assert entry["speedup"] == pytest.approx(entry[ref]["median_s"] / entry["ours"]["median_s"])
        assert entry["target_met"] == (entry["speedup"] >= entry["target_speedup"])
    # the benchmark also checks that both libraries computed the same thing
    assert saved["fdk"]["relative_rmse_vs_rtk_in_fov"] < 0.01
    assert saved["projector"]["relative_rmse_vs_rtk"] < 0.01


def test_benchmark_rejects_bad_arguments(bench) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--size", "4"])
