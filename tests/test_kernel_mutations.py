"""One-line changes to csrc fail the tests, without a GPU: each mutant below (a distance weight, a texel offset, a
guard, a bilinear tap, the ray set-up, a segment flush, an include NVRTC cannot open, ...) is compiled by the CPU
harness and run through tests/kernel_checks.py, which must report a failure; the unchanged source must pass.

Each mutant runs in a forked child (a mutant may write out of bounds and corrupt its process); the references are
computed once in the parent, before the forks.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

import kernel_checks
from cbct.cuda import sources
from cbct.cuda.emulator import compiler_available

pytestmark = [
    pytest.mark.skipif(not compiler_available(), reason="no C++ compiler (g++ or $CXX) for the CPU harness"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to isolate the mutants"),
    pytest.mark.usefixtures("one_numba_thread"),
]

#: (file, exact text, replacement, what it breaks). Every text occurs exactly once in its file.
MUTANTS = [
    ("backprojection.cu", "tex2DLayered<float>(proj, u + 0.5f, v + 0.5f, layer)",
     "tex2DLayered<float>(proj, u + 0.5f, v + 0.45f, layer)", "texel offset (texture-filtered FDK)"),
    ("backprojection.cu", "inv_w * inv_w, acc[z])", "inv_w, acc[z])", "FDK distance weight"),
    ("backprojection.cu", "const float inv_w = __frcp_rn(fmaf(rw.z, fz, w0));",
     "const float inv_w = __frcp_rn(fmaf(rw.z, fz + 1.0f, w0));", "z step of the projection matrix"),
    ("backprojection.cu", "const float fk0 = (float)k0;", "const float fk0 = (float)(k0 + 1);", "first plane of a thread"),
    ("backprojection.cu", "            segment = view_segment;\n", "\n", "segment never advances"),
    ("backprojection.cu", "const int view_segment = c_fdk_segment[view];",
     "const int view_segment = c_fdk_segment[view > 0 ? view - 1 : 0];", "segment of a view"),
    ("backprojection.cu", "const long long segment_stride = plane_stride * nz;",
     "const long long segment_stride = plane_stride * (nz - 1);", "segment stride"),
    ("backprojection.cu", "if (k0 + z < nz) {", "if (k0 + z < nz - 1) {", "z guard of the flush"),
    ("backprojection.cu", "if (i >= nx || j >= ny || n_views <= 0) {", "if (i >= nx || j > ny || n_views <= 0) {",
     "thread guard (writes past the volume)"),
    ("backprojection.cu", "if (b1 && c1) atomicAdd(base + sb + sc, wb * v1);",
     "if (b1 && c1) atomicAdd(base + sc, wb * v1);", "scatter tap"),
    ("backprojection.cu", "const float v1 = wc * value;", "const float v1 = wb * value;", "scatter weight"),
    ("backprojection.cu", "const int view = c_ray_view[slot];", "const int view = slot;", "view of a ray slot"),
    ("backprojection.cu", '#include "joseph_ray.cu"', '#include "joseph_ray.cuh"', "an include NVRTC cannot open"),
    ("forward_projection.cu", "*dst = accumulate ? *dst + value : value;", "*dst = value;", "slab accumulation"),
    ("forward_projection.cu", "if (A == 1) return tex3D<float>(vol, b, m, c);",
     "if (A == 1) return tex3D<float>(vol, m, b, c);", "texture axes of a y-dominant ray"),
    ("forward_projection.cu", "acc += fetch_plane<A>(vol, xm, pb + 0.5f, pc + 0.5f);",
     "acc += fetch_plane<A>(vol, xm, pb + 0.5f, pc + 0.6f);", "texel offset (texture-filtered projector)"),
    ("forward_projection.cu", "const float xm = (float)m + 0.5f;", "const float xm = (float)m + 0.3f;",
     "plane texel offset (texture-filtered projector)"),
    ("backprojection.cu", "return bilinear(u, v,", "return bilinear(v, u,", "detector axes of the bilinear sample"),
    ("forward_projection.cu", "acc += bilinear(pb, pc,", "acc += bilinear(pc, pb,", "plane axes of the bilinear sample"),
    ("bilinear.cu", "const float x0 = fa + 0.5f;", "const float x0 = fa - 0.5f;", "texel offset (exact paths)"),
    ("bilinear.cu", "const float t11 = fetch(x0 + 1.0f, y0 + 1.0f);", "const float t11 = fetch(x0 + 1.0f, y0);",
     "bilinear tap"),
    ("bilinear.cu", "const float high = fmaf(wa, t11 - t01, t01);", "const float high = fmaf(wb, t11 - t01, t01);",
     "bilinear weight (first axis)"),
    ("bilinear.cu", "return fmaf(wb, high - low, low);", "return fmaf(wa, high - low, low);", "bilinear weight (second axis)"),
    ("joseph_ray.cu", "const double rz = r[5] + iu * r[8] + iv * r[11] - sz;",
     "const double rz = r[5] + iu * r[8] + iv * r[10] - sz;", "ray direction"),
    ("joseph_ray.cu", "const double t2 = ((double)n - coord0) / slope;",
     "const double t2 = ((double)n - 1.0 - coord0) / slope;", "plane range"),
    ("joseph_ray.cu", "ray.m_last = (int)floor(m_hi);", "ray.m_last = (int)floor(m_hi) - 1;", "last plane"),
    ("joseph_ray.cu", "if (ax >= ay && ax >= az) {", "if (ax >= ay) {", "dominant axis (z-dominant rays)"),
    ("joseph_ray.cu", "ray.weight = (float)(length_mm / fabs(r_a));", "ray.weight = (float)(length_mm / r_a);",
     "ray weight sign"),
]


@pytest.fixture(scope="module")
def references():
    return kernel_checks.prepare_references()


def test_every_mutant_text_occurs_once():
    for file, old, _new, what in MUTANTS:
        assert sources.read_source(file).count(old) == 1, f"{file}: {what}: {old!r}"


def test_unchanged_kernels_pass_the_checks(references):
    assert kernel_checks.outcome_in_child(references, None) == 0


@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{m[0]}:{m[3]}" for m in MUTANTS])
def test_mutant_is_caught(references, mutant):
    outcome = kernel_checks.outcome_in_child(references, mutant[:3])
    assert outcome != 0, f"the checks pass with {mutant[3]} broken: {mutant[1]!r} -> {mutant[2]!r}"
    assert outcome != -signal.SIGALRM, "the mutant hung"
    sys.stdout.flush()
