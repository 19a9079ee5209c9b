"""Mutation sweep of the CUDA kernels on the CPU: every one-line change that a small set of operators makes to csrc
(arithmetic and comparison operators, logical connectives, float constants, min/max and floor/ceil swaps, statement
deletion) is compiled by the CPU harness (cbct.cuda.emulator) and run through tests/kernel_checks.py in a forked
child. A mutant is *killed* when a check fails, *refused* when the harness (g++) cannot build it (NVRTC would
refuse it too), and *survives* otherwise; the survivors are listed for a reader to judge (equivalent mutants, such
as a texel offset that stays inside its texel under point sampling, cannot be killed).

    python benchmarks/kernel_mutation_sweep.py                       # every file, ~3 s per mutant on one core
    python benchmarks/kernel_mutation_sweep.py --files joseph_ray.cu --limit 20

Writes ``benchmarks/results/kernel_mutation_sweep.json``. Needs g++ and os.fork (Linux); no GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import pathlib
import platform
import re
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import kernel_checks  # noqa: E402
from cbct.cuda.sources import read_source  # noqa: E402
from cbct.io.atomic import write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.kernel_mutation_sweep")

FILES = ("backprojection.cu", "forward_projection.cu", "joseph_ray.cu")
#: (pattern, replacement): each match in a line gives one mutant (the match replaced, the rest unchanged).
OPERATORS = [
    (r"(?<=\s)\+(?=\s)", "-"), (r"(?<=\s)-(?=\s)", "+"), (r"(?<=\s)\*(?=\s)", "/"), (r"(?<=\s)/(?=\s)", "*"),
    (r"<=", "<"), (r"(?<![<\w])<(?![<=])(?=\s)", "<="), (r">=", ">"), (r"(?<=\s)>(?![>=])", ">="),
    (r"==", "!="), (r"!=", "=="), (r"&&", "||"), (r"\|\|", "&&"),
    (r"\bfminf\b", "fmaxf"), (r"\bfmaxf\b", "fminf"), (r"\bfmin\b", "fmax"), (r"\bfmax\b", "fmin"),
    (r"\bfloorf\b", "ceilf"), (r"\bfloor\b", "ceil"), (r"\bceil\b", "floor"),
    (r"\b0\.5f\b", "0.0f"), (r"\b1\.0f\b", "2.0f"), (r"\b0\.0f\b", "1.0f"), (r"\b1\.0\b", "2.0"),
    (r"(?<=[\s(\[])1(?=[\s)\];])", "2"), (r"(?<=[\s(\[])0(?=[\s)\];])", "1"),
]
TYPE_START = re.compile(r"^\s*(const|float|int|double|long|bool|unsigned|JosephRay|__constant__|template|struct|"
                        r"extern|typedef|#|namespace|return\b|}|{)")


def code_lines(text: str) -> list[tuple[int, str]]:
    """(index, line) of lines that hold code (not blank, not only a comment, not inside a block comment)."""
    found, in_block = [], False
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if in_block:
            in_block = "*/" not in stripped
            continue
        if stripped.startswith("/*"):
            in_block = "*/" not in stripped
            continue
        if not stripped or stripped.startswith("//") or stripped in ("{", "}", "};"):
            continue
        if stripped.startswith("#") and not stripped.startswith("#include"):
            continue
        found.append((index, line))
    return found


def mutants_of(file: str) -> list[dict]:
    """Every single-site mutant of ``file``: line number, what changed, the mutated file text."""
    text = read_source(file)
    lines = text.splitlines(keepends=True)
    out = []
    for index, line in code_lines(text):
        code, _, comment = line.partition("//")
        for pattern, replacement in OPERATORS:
            for match in re.finditer(pattern, code):
                mutated = code[: match.start()] + replacement + code[match.end():] + (("//" + comment) if comment else "")
                out.append({"file": file, "line": index + 1, "change": f"{match.group(0)!r} -> {replacement!r}",
                            "text": "".join(lines[:index] + [mutated] + lines[index + 1:]),
                            "original_line": line.rstrip("\n").strip()})
        if code.rstrip().endswith(";") and not TYPE_START.match(code):
            out.append({"file": file, "line": index + 1, "change": "statement deleted",
                        "text": "".join(lines[:index] + ["\n"] + lines[index + 1:]),
                        "original_line": line.rstrip("\n").strip()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=FILES)
    parser.add_argument("--limit", type=int, default=None, help="at most this many mutants per file")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "kernel_mutation_sweep.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import numba

    numba.set_num_threads(1)
    started = time.perf_counter()
    references = kernel_checks.prepare_references()
    assert kernel_checks.outcome_in_child(references, None) == 0, "the unchanged kernels fail the checks"
    results = []
    for file in args.files:
        mutants = mutants_of(file)[: args.limit]
        log.info("%s: %d mutants", file, len(mutants))
        original = read_source(file)
        for m in mutants:
            outcome = kernel_checks.outcome_in_child(references, (file, original, m["text"]))
            status = {0: "survived", 1: "killed", 2: "refused"}.get(outcome, "killed (crashed)")
            results.append({k: m[k] for k in ("file", "line", "change", "original_line")} | {"status": status})
            if status == "survived":
                log.info("  survived: %s:%d %s   %s", file, m["line"], m["change"], m["original_line"])
    counts = {s: sum(r["status"] == s for r in results) for s in ("killed", "killed (crashed)", "refused", "survived")}
    compiled = len(results) - counts["refused"]
    summary = {
        "what": "one-line mutants of csrc run through tests/kernel_checks.py on the CPU harness",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "files": args.files, "mutants": len(results), "counts": counts,
        "kill_rate_of_built": round((counts["killed"] + counts["killed (crashed)"]) / max(compiled, 1), 4),
        "wall_s": round(time.perf_counter() - started, 1),
        "survivors": [r for r in results if r["status"] == "survived"],
        "all": results,
    }
    write_text_atomic(args.out, json.dumps(summary, indent=1))
    log.info("%d mutants: %s; kill rate of those that build %.1f %% (%.0f s) -> %s", len(results), counts,
             100 * summary["kill_rate_of_built"], summary["wall_s"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
