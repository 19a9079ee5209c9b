#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels that the bare GPU machine of the device tool (kind nvidia-h200)
# lacks, for a device run to carry (carry: [".whl"]; the exact call is in benchmarks/README.md, "Device check").
#
# That machine (/work/.library/device/KINDS.md): python3 is CPython 3.12 on x86-64, and its image already holds
# numpy, scipy, numba, llvmlite, h5py, pillow, pyyaml, tqdm, tifffile, torch, scikit-image, pytest,
# pytest-timeout and cupy-cuda13x 14.2.0 (driver 580, CUDA 13). Of cbct's install_requires only nibabel and
# pydicom are missing: those are carried. Not carried:
#   cupy-cuda13x  already there; its 14.2.0 cp312 wheel is 66.2 MiB, more than one call may carry (64 MiB).
#   itk-rtk       test extra, used by tests/test_rtk.py only (no GPU test in it); too large. That module fails
#                 collection there, which the device check records as a missing-package collection error.
#
# usage: benchmarks/prepare_device_wheels.sh [NAME==VERSION ...]    (more wheels, e.g. another numba)
# Needs pip and a package index here. Fails when the wheels and the working tree together pass 64 MiB.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
PYTHON=${PYTHON:-python3}
DEVICE_PYTHON=3.12
WHEELS=(nibabel==5.4.2 pydicom==3.0.2 "$@")

if ! git check-ignore -q .whl/probe.whl; then  # .gitignore has /.whl/; a checkout without it still must not commit them
    echo '/.whl/' >> .git/info/exclude
fi
rm -rf .whl
mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

"$PYTHON" - <<'EOF'
"""Sizes, declared requirements (to check against the machine's packages) and the 64 MiB carry limit."""
import os
import pathlib
import re
import subprocess
import sys
import zipfile

LIMIT = 64 * 2**20
wheels = sorted(pathlib.Path(".whl").glob("*.whl"))
names = [re.split(r"-\d", w.name, maxsplit=1)[0].lower().replace("_", "-") for w in wheels]
if len(set(names)) != len(names):
    sys.exit(f"two versions of one package in .whl/ (the install there would stop): {names}")
total = 0
for wheel in wheels:
    size = wheel.stat().st_size
    total += size
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    needs = [line.split(":", 1)[1].strip() for line in meta.splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
    print(f"{wheel.name:60s} {size / 2**20:6.2f} MiB  needs: {', '.join(needs) or '-'}")
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        capture_output=True, check=True).stdout.split(b"\0")
tree = sum(os.lstat(p).st_size for p in map(os.fsdecode, listed) if p and os.path.isfile(p) and not os.path.islink(p))
print(f"wheels {total / 2**20:.2f} MiB + working tree {tree / 2**20:.2f} MiB = {(total + tree) / 2**20:.2f} MiB "
      f"of the {LIMIT // 2**20} MiB a device call carries")
if total + tree > LIMIT:
    sys.exit("too large to carry in one call: drop wheels or ignore large untracked files")
EOF
