"""The one-call device check (benchmarks/device_check.py) without a GPU: arguments, the time budget, the JSON of a
dry run and of a machine without a GPU, the pytest part, a part's own process, and the GPU-against-harness
comparison (benchmarks/device_compare.py) on the Numba twins and, where g++ is, the CPU harness."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import pathlib
import sys
import time

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def dc():
    return _load("device_check")


@pytest.fixture(scope="module")
def compare_module(dc):
    return _load("device_compare")


def strict_json(path: pathlib.Path) -> dict:
    def refuse(value: str):
        raise ValueError(f"non-standard JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


def harness_or_skip():
    try:
        from cbct.cuda.emulator import compiler_available, emulated_cupy
    except ImportError as exc:
        pytest.skip(f"the CPU harness is not importable here: {exc}")
    if not compiler_available():
        pytest.skip("no C++ compiler for the CPU harness")
    return emulated_cupy


# ------------------------------------------------------------------------------------------------ arguments
def test_arguments_defaults_subsets_and_errors(dc, tmp_path):
    args = dc.parse_args(["--out", str(tmp_path)])
    assert [p.name for p in args.parts] == ["tests", "compare", "timing"] and args.budget == 450
    assert args.timing_sizes == [(512, 360, 512), (256, 256, 256)] and (args.compare_size, args.compare_views) == (64, 72)
    assert [p.name for p in dc.parse_args(["--out", "x", "--parts", "timing,tests"]).parts] == ["tests", "timing"]
    assert dc.parse_args(["--out", "x", "--timing-sizes", "128:90:160"]).timing_sizes == [(128, 90, 160)]
    for bad in (["--parts", "tests,gpu"], ["--timing-sizes", "512:360"], ["--timing-sizes", "a:b:c"],
                ["--budget", "0"], ["--compare-views", "4"], []):
        with pytest.raises(SystemExit):
            dc.parse_args(["--out", "x", *bad] if bad else bad)
    with pytest.raises(SystemExit):
        dc.parse_args(["--part", "compare"])  # a part's own process needs --part-out and --part-limit


def test_child_argv_round_trip(dc, tmp_path):
    args = dc.parse_args(["--out", "x", "--seed", "3", "--compare-size", "32", "--compare-views", "40", "--repeats",
                          "4", "--warmup", "1", "--timing-sizes", "128:90:160,64:30:64"])
    child = dc.parse_args(dc.child_argv(args, "timing", tmp_path / "t.json", 123.4))
    assert (child.part, child.part_out, child.part_limit) == ("timing", tmp_path / "t.json", 123.4)
    for key in ("seed", "compare_size", "compare_views", "repeats", "warmup", "timing_sizes"):
        assert getattr(child, key) == getattr(args, key)


# ------------------------------------------------------------------------------------------------ time budget
def test_part_limit_keeps_the_later_parts_minimums(dc):
    tests, compare, timing = dc.PARTS
    assert dc.part_limit(tests, [compare, timing], 450) == tests.budget_s
    assert dc.part_limit(compare, [timing], 200) == 200 - timing.minimum_s
    assert dc.part_limit(compare, [timing], timing.minimum_s + compare.minimum_s - 1) is None
    assert dc.part_limit(timing, [], 170) == 170 and dc.part_limit(timing, [], 149) is None


def test_run_parts_gives_over_runs_skips_and_errors(dc):
    now = [0.0]
    limits = {}

    def runner(name, takes, fail=False):
        def run(limit):
            limits[name] = limit
            now[0] += takes(limit)
            if fail:
                raise RuntimeError("boom")
            return {"status": "ok"}
        return run

    # the tests use all they may; compare gets what timing's minimum leaves, and errors; timing gets the rest
    runners = {"tests": runner("tests", lambda limit: limit), "compare": runner("compare", lambda limit: 10, fail=True),
               "timing": runner("timing", lambda limit: limit / 2)}
    seen = []
    records = dc.run_parts(dc.PARTS, runners, total_s=400, started=-50.0, clock=lambda: now[0],
                           after=lambda done: seen.append(list(done)))
    assert seen == [["tests"], ["tests", "compare"], ["tests", "compare", "timing"]]
    assert limits == {"tests": 150, "compare": 50, "timing": 190}  # 350 left: 150; 200 - 150 kept: 50; 190 left
    assert records["compare"]["status"] == "error" and "boom" in records["compare"]["reason"]
    assert records["timing"]["status"] == "ok" and records["timing"]["wall_s"] == 95
    assert records["tests"]["limit_s"] == 150 and records["tests"]["wall_s"] == 150
    # a part that overruns its limit (the kill's grace) eats into the next; the timing part keeps its minimum
    now[0], limits = 0.0, {}
    runners["tests"] = runner("tests", lambda limit: limit + 5)
    records = dc.run_parts(dc.PARTS, runners, total_s=300, started=0.0, clock=lambda: now[0])
    assert limits == {"tests": 120, "timing": 175} and records["compare"]["status"] == "skipped"
    assert "time budget: 175 s left" in records["compare"]["reason"]


# ------------------------------------------------------------------------------------------------ dry run, no GPU
def test_dry_run_and_no_gpu_write_the_schema_and_exit_0(dc, tmp_path, monkeypatch):
    assert dc.main(["--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    report = strict_json(next((tmp_path / "dry").glob("device_check_no-gpu_*.json")))
    for key in ("check", "date", "budget", "settings", "host", "gpu", "parts", "status", "wall_s"):
        assert key in report
    assert report["status"] == "dry run" and set(report["parts"]) == {"tests", "compare", "timing"}
    assert report["budget"]["parts"]["timing"]["minimum_s"] == 150 and "numpy" in report["host"]["packages"]
    monkeypatch.setattr("cbct.cuda.is_available", lambda: False)
    assert dc.main(["--out", str(tmp_path / "none"), "--parts", "tests,compare"]) == 0
    report = strict_json(next((tmp_path / "none").glob("*.json")))
    assert report["status"] == "no GPU" and report["gpu"]["available"] is False and "no GPU" in report["gpu"]["reason"]
    assert report["parts"] == {"tests": {"status": "skipped", "reason": "no GPU"},
                               "compare": {"status": "skipped", "reason": "no GPU"}}


def test_jsonable_drops_nan_and_numpy_types(dc):
    data = {"a": np.float32(1.5), "b": float("nan"), "c": (np.int64(2), float("inf")), 3: [np.bool_(True)]}
    assert dc.jsonable(data) == {"a": 1.5, "b": None, "c": [2, None], "3": [True]}


# ------------------------------------------------------------------------------------------------ part 1: pytest
TESTS = '''
import time
import pytest

pytestmark = pytest.mark.gpu

def test_passes(): pass
def test_fails(): assert 1 == 2, "one is not two"
def test_skips(): pytest.skip("no CUDA GPU here")
@pytest.mark.skipif(True, reason="never")
def test_sleeps(): time.sleep(60)
'''


def _test_dir(tmp_path: pathlib.Path, body: str) -> pathlib.Path:
    (tmp_path / "conftest.py").write_text("def pytest_configure(config):\n"
                                          "    config.addinivalue_line('markers', 'gpu: needs a GPU')\n")
    (tmp_path / "test_some_gpu.py").write_text(body)
    (tmp_path / "test_needs_missing.py").write_text("import a_package_that_is_not_there\n")
    (tmp_path / "test_cpu_only.py").write_text("def test_cpu(): pass\n")
    return tmp_path


def test_tests_part_counts_failures_and_collection_errors(dc, tmp_path):
    record = dc.tests_part(60, _test_dir(tmp_path, TESTS))
    assert (record["passed"], record["failed"], record["errors"], record["skipped"]) == (1, 1, 0, 2)
    assert record["status"] == "failed" and record["exit_code"] == 1
    (failure,) = record["failures"]
    assert failure["name"].endswith("test_fails") and "one is not two" in failure["message"]
    (missing,) = record["collection_errors"]
    assert "test_needs_missing" in missing["module"] and missing["message"].startswith("ModuleNotFoundError")
    assert record["skip_reasons"] == {"no CUDA GPU here": 1, "never": 1} and "failed" in record["output_tail"]


def test_tests_part_is_killed_at_its_limit(dc, tmp_path):
    record = dc.tests_part(3, _test_dir(tmp_path, TESTS.replace("skipif(True", "skipif(False")))
    assert record["status"] == "timed out" and record["exit_code"] is None and "3 s" in record["reason"]


# ------------------------------------------------------------------------------------------------ part 2: compare
@pytest.fixture(scope="module")
def tiny_scan(compare_module):
    return compare_module.compare_scan(12, 16, seed=5)


def test_cases_cover_every_specialisation(compare_module):
    from cbct.cuda.sources import KERNEL_FILES

    cases = compare_module.cases()
    assert {c.kernel for c in cases} == {k for names in KERNEL_FILES.values() for k in names}
    assert len({c.name for c in cases}) == len(cases) == 14
    assert {c.options.get("texture_dtype") for c in cases if c.op in ("fdk", "project")} == {"float32", "float16"}
    assert sum(c.op == "segmented" for c in cases) == 1 and sum(not c.exact_path for c in cases) == 6


def test_compare_logic_against_the_twins(compare_module, tiny_scan, monkeypatch):
    """The GPU side stood in by the twin plus a known relative perturbation: the errors come out as that."""
    cm = compare_module
    monkeypatch.setattr(cm, "run_case", lambda case, scan, xp: cm.run_twin(case, scan) * (1 + xp))
    no_harness = cm.compare(tiny_scan, gpu=lambda: contextlib.nullcontext(1e-3), harness=None)
    assert no_harness["harness"] == {"available": False, "reason": "harness unavailable: none given"}
    for entry in no_harness["cases"].values():
        assert entry["error_gpu_vs_twin"] == pytest.approx(1e-3, rel=1e-6)
        assert entry["gpu_finite"] and "error_gpu_vs_harness" not in entry
        assert ("error_gpu_vs_twin_rounded_input" in entry) == (entry["options"].get("texture_dtype") == "float16")
    record = cm.compare(tiny_scan, gpu=lambda: contextlib.nullcontext(1e-3), harness=lambda: contextlib.nullcontext(0.0))
    entry = record["cases"]["joseph_backproject"]
    assert entry["error_gpu_vs_harness"] == pytest.approx(1e-3, rel=1e-6) and entry["error_harness_vs_twin"] == 0
    assert record["scan"]["views"] == 16 and len(record["scan"]["segments"]) == 9
    assert set(record["twin_seconds"]) == {"fdk", "fdk[float16-rounded]", "segmented", "project",
                                           "project[float16-rounded]", "matched"}
    late = cm.compare(tiny_scan, gpu=lambda: contextlib.nullcontext(0.0), harness=lambda: contextlib.nullcontext(0.0),
                      deadline=time.monotonic() - 1)  # past: no harness case starts
    assert all("time budget" in e["harness_skipped"] and "harness_seconds" not in e for e in late["cases"].values())


def test_compare_records_an_unavailable_harness_and_case_errors(compare_module, tiny_scan, monkeypatch):
    cm = compare_module
    monkeypatch.setattr(cm, "load_harness", lambda: (None, "harness unavailable: ImportError: not yet"))

    def run_case(case, scan, xp):
        if case.op == "matched":
            raise RuntimeError("launch failed")
        return cm.run_twin(case, scan)

    monkeypatch.setattr(cm, "run_case", run_case)
    record = cm.compare(tiny_scan, gpu=lambda: contextlib.nullcontext(None))
    assert record["harness"] == {"available": False, "reason": "harness unavailable: ImportError: not yet"}
    assert record["cases"]["joseph_backproject"]["gpu_error"] == "RuntimeError: launch failed"
    assert record["cases"]["joseph_project<false>[float32]"]["error_gpu_vs_twin"] == 0
    assert cm.rel_l2(np.ones(3), np.full(3, np.nan)) is None and cm.rel_l2(np.ones(3), np.ones(4)) is None
    found = cm.problems(record)  # the stand-in returns the unrounded twin: off the rounded one for float16 texels
    assert found[-1] == "joseph_backproject: RuntimeError: launch failed" and all("[float16]" in p for p in found[:-1])


def test_problems_judge_errors_nan_and_exact_paths_only(compare_module):
    cases = {
        "exact": {"exact_path": True, "error_gpu_vs_twin": 2e-4, "gpu_finite": True},
        "half": {"exact_path": True, "error_gpu_vs_twin": 3e-4, "error_gpu_vs_twin_rounded_input": 1e-6},
        "filtered": {"exact_path": False, "error_gpu_vs_twin": 2e-3, "error_gpu_vs_harness": 1e-2},
        "nan": {"exact_path": True, "harness_finite": False, "error_gpu_vs_twin": 1e-7},
    }
    assert compare_module.problems({"cases": cases, "twin_errors": {"matched": "ValueError: x"}}) == [
        "matched: ValueError: x", "exact: GPU vs twin 2.00e-04 >= 0.0001", "nan: harness output not finite"]


def test_compare_part_on_the_cpu_harness(dc, compare_module, tmp_path, monkeypatch):
    """The compare part's own process path (in-process here), the emulated device standing in for the GPU: the
    same kernels on both sides agree exactly, the exact paths agree with the twin, and launches were several."""
    emulated_cupy = harness_or_skip()
    seen = []

    @contextlib.contextmanager
    def device():
        with emulated_cupy() as cp:
            seen.append(cp)
            yield cp

    monkeypatch.setattr(compare_module, "real_cupy", device)
    out = tmp_path / "compare.json"
    assert dc.main(["--part", "compare", "--part-out", str(out), "--part-limit", "120", "--compare-size", "12",
                    "--compare-views", "16"]) == 0
    record = strict_json(out)
    assert record["status"] == "ok" and record["harness"]["available"] is True and record["problems"] == []
    for name, entry in record["cases"].items():
        assert entry["error_gpu_vs_harness"] == 0, name
        rounded = entry.get("error_gpu_vs_twin_rounded_input", entry["error_gpu_vs_twin"])
        assert (rounded < 1e-4) if entry["exact_path"] else (1e-4 < entry["error_gpu_vs_twin"] < 5e-3), name
    launches = [name for name, *_ in seen[0]._emulator.launches]
    assert launches.count("fdk_backproject<4, false>") >= 6  # two cases (float32, float16), >= 3 view chunks each
    assert launches.count("joseph_project<false>") == 2 * compare_module.PROJECT_SLABS


def test_a_part_process_keeps_its_partial_record(dc, tmp_path, monkeypatch):
    def compare_child(args, deadline, record, progress):
        record["cases"] = {"first": {"gpu_seconds": 1.0}}
        progress()
        raise MemoryError("out of device memory")

    monkeypatch.setattr(dc, "compare_child", compare_child)
    out = tmp_path / "part.json"
    assert dc.child_main(dc.parse_args(["--part", "compare", "--part-out", str(out), "--part-limit", "30"])) == 1
    record = strict_json(out)
    assert record["status"] == "error" and "out of device memory" in record["reason"] and record["cases"]["first"]


# ------------------------------------------------------------------------------------------------ part 3: timing
def test_timing_part_records_each_size_and_skips_past_the_deadline(dc, tmp_path, monkeypatch):
    """The timing part's own process path (in-process) on the emulated device, :func:`gpu_benchmark.measure`
    (CUDA events) stood in."""
    emulated_cupy = harness_or_skip()
    gb = _load("gpu_benchmark")
    measured = []
    monkeypatch.setattr(gb, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(gb, "measure", lambda name, entry, **kw: measured.append((name, kw)) or {"median_ms": 1.0})
    argv = ["--part", "timing", "--timing-sizes", "12:8:16,8:8:10", "--repeats", "3", "--warmup", "1"]
    with emulated_cupy():
        assert dc.main([*argv, "--part-out", str(tmp_path / "t.json"), "--part-limit", "60"]) == 0
        assert dc.main([*argv, "--part-out", str(tmp_path / "late.json"), "--part-limit", "1"]) == 1
    record = strict_json(tmp_path / "t.json")
    assert record["status"] == "ok" and record["copy_bandwidth_bytes_per_s"] == 1e12
    assert list(record["runs"]) == ["12^3 x 8 views of 16^2", "8^3 x 8 views of 10^2"]
    run = record["runs"]["12^3 x 8 views of 16^2"]
    assert run["sizes"]["volume"] == [12, 12, 12] and run["ray_samples"] > 0 and list(run["results"]) == [
        "fdk_backprojection[exact,float32]", "segmented_backprojection[K=8]", "forward_projection[exact,float32]",
        "fdk_end_to_end[device]"]
    assert len(measured) == 8 and measured[0][1] == {"bandwidth": 1e12, "warmup": 1, "repeats": 3}
    late = strict_json(tmp_path / "late.json")  # its deadline (limit less the margin) had passed at the start
    assert late["status"] == "incomplete" and all("time budget" in r["skipped"] for r in late["runs"].values())


def test_timing_status_failed_when_an_entry_raises(tmp_path, monkeypatch):
    emulated_cupy = harness_or_skip()
    gb, timing = _load("gpu_benchmark"), _load("device_timing")
    monkeypatch.setattr(gb, "copy_bandwidth", lambda: 1e12)

    def measure(name, entry, **kw):
        if name.startswith("forward"):
            raise MemoryError("out of memory allocating 1 GiB")
        return {"median_ms": 2.0}

    monkeypatch.setattr(gb, "measure", measure)
    record = {}
    with emulated_cupy():
        status = timing.timing([(8, 8, 10)], ["forward_projection[exact,float32]", "fdk_end_to_end[device]"], warmup=0,
                               repeats=1, seed=0, deadline=time.monotonic() + 60, record=record)
    assert status == "failed"
    results = record["runs"]["8^3 x 8 views of 10^2"]["results"]
    assert "MemoryError" in results["forward_projection[exact,float32]"]["error"]
    assert results["fdk_end_to_end[device]"] == {"median_ms": 2.0}
