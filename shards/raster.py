"""A z-buffered triangle rasteriser on the CPU, vectorised with torch: what face profiling renders with.

Why here and not a library: the renderers that do this (PyTorch3D, nvdiffrast, OpenGL) need CUDA or a display,
and profiling runs at pack time on whatever machine packs. The meshes are small (tens of thousands of
triangles a few pixels wide), so one vectorised pass per triangle-size bucket is fast enough: every triangle
of a bucket tests the same ``B x B`` window of candidate pixels at once, the winners per pixel are chosen by
``scatter_reduce(amax)`` of depth (z points towards the camera, the largest z is in front), and each pixel
gets the barycentric interpolation of the winning triangle's vertex attributes.

Pixel centres are at integer coordinates (the convention of :mod:`superfan.landmarks`), and a pixel belongs to a
triangle when its centre is inside or on an edge, so two triangles sharing an edge leave no crack.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

#: Candidate pixels one vectorised chunk may test (memory: ~12 floats each).
CHUNK_CANDIDATES = 1 << 22
_EDGE_EPS = 1e-5


class Raster(NamedTuple):
    attrs: torch.Tensor  #: (H, W, C) interpolated attributes of the front-most surface (0 where uncovered)
    depth: torch.Tensor  #: (H, W) its depth (-inf where uncovered)
    triangle: torch.Tensor  #: (H, W) index of the winning triangle (-1 where uncovered)


def rasterize(
    xy: np.ndarray | torch.Tensor,
    z: np.ndarray | torch.Tensor,
    attrs: np.ndarray | torch.Tensor,
    triangles: np.ndarray | torch.Tensor,
    size: tuple[int, int],
) -> Raster:
    """Render triangles ``(T, 3)`` over vertices at pixel positions ``xy (N, 2)`` with depths ``z (N,)`` and
    per-vertex ``attrs (N, C)`` into an image of ``size = (H, W)``; see the module docstring."""
    h, w = size
    xy_t = torch.as_tensor(np.asarray(xy), dtype=torch.float64)
    z_t = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    a_t = torch.as_tensor(np.asarray(attrs), dtype=torch.float64)
    tri = torch.as_tensor(np.asarray(triangles), dtype=torch.long)
    c = a_t.shape[1]
    out_z = torch.full((h * w,), -math.inf, dtype=torch.float64)
    pixels, depths, winners = [], [], []
    if len(tri):
        corners = xy_t[tri]  # (T, 3, 2)
        lo = torch.floor(corners.min(dim=1).values).clamp_min(0)
        hi = torch.ceil(corners.max(dim=1).values)
        hi[:, 0].clamp_(max=w - 1)
        hi[:, 1].clamp_(max=h - 1)
        span = (hi - lo + 1).max(dim=1).values
        e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
        area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        keep = (span >= 1) & (area.abs() > 1e-12) & torch.isfinite(area)
        for bucket in _buckets(span, keep):
            for chunk in torch.split(bucket, max(1, CHUNK_CANDIDATES // int(span[bucket].max().item()) ** 2)):
                p, d, win = _candidates(chunk, int(span[chunk].max().item()), corners, area, lo, z_t, tri, (h, w))
                pixels.append(p)
                depths.append(d)
                winners.append(win)
    if not pixels:
        return Raster(torch.zeros(h, w, c, dtype=torch.float64), out_z.view(h, w), torch.full((h, w), -1))
    pix, dep = torch.cat(pixels), torch.cat(depths)
    weights, tris = torch.cat([x[0] for x in winners]), torch.cat([x[1] for x in winners])
    out_z.scatter_reduce_(0, pix, dep, reduce="amax")
    front = dep >= out_z[pix]  # ties: the last written of the front-most wins
    pix, weights, tris = pix[front], weights[front], tris[front]
    out_t = torch.full((h * w,), -1, dtype=torch.long)
    out_t[pix] = tris
    # Attributes of each pixel's winning candidate: interpolate only the winners.
    vals = (weights.unsqueeze(-1) * a_t[tri[tris]]).sum(dim=1)
    out_a = torch.zeros(h * w, c, dtype=torch.float64)
    out_a[pix] = vals
    covered = out_t >= 0
    out_a[~covered] = 0
    return Raster(out_a.view(h, w, c), out_z.view(h, w), out_t.view(h, w))


def _buckets(span: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
    """Triangle indices grouped by the power of two their bounding box fits in (2, 4, 8, ...)."""
    idx = torch.nonzero(keep).squeeze(1)
    if not len(idx):
        return []
    size = torch.clamp(torch.ceil(torch.log2(span[idx].double())), min=1).long()
    return [idx[size == s] for s in torch.unique(size)]


def _candidates(
    chunk: torch.Tensor,
    box: int,
    corners: torch.Tensor,
    area: torch.Tensor,
    lo: torch.Tensor,
    z: torch.Tensor,
    tri: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The covered pixels of the ``chunk`` triangles (each tested over a ``box`` x ``box`` window from its
    bounding box's corner): flat pixel index, interpolated depth, and (barycentric weights, triangle) of each.

    Barycentrics are affine in the pixel, ``w = A x + B y + C``: their coefficients are computed once per
    triangle (float64, exact for any image size), and evaluated over the window in float32 relative to the
    window's corner, where the numbers stay small."""
    h, w = size
    a, b, c = corners[chunk, 0], corners[chunk, 1], corners[chunk, 2]
    ar = area[chunk]
    x0, y0 = lo[chunk, 0], lo[chunk, 1]

    def coeffs(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # twice the signed area of (p, q, pixel) / twice the triangle's: A x + B y + C, at the window corner
        ca, cb = -(q[:, 1] - p[:, 1]) / ar, (q[:, 0] - p[:, 0]) / ar
        cc = ((q[:, 0] - p[:, 0]) * (y0 - p[:, 1]) - (q[:, 1] - p[:, 1]) * (x0 - p[:, 0])) / ar
        return ca.float()[:, None], cb.float()[:, None], cc.float()[:, None]

    off = torch.arange(box, dtype=torch.float32)
    gy, gx = torch.meshgrid(off, off, indexing="ij")
    gx, gy = gx.reshape(1, -1), gy.reshape(1, -1)
    (aa, ab, ac), (ba, bb, bc) = coeffs(b, c), coeffs(c, a)
    wa = aa * gx + ab * gy + ac
    wb = ba * gx + bb * gy + bc
    wc = 1.0 - wa - wb
    inside = (wa >= -_EDGE_EPS) & (wb >= -_EDGE_EPS) & (wc >= -_EDGE_EPS)
    inside &= (x0[:, None].float() + gx <= w - 1) & (y0[:, None].float() + gy <= h - 1)
    rows, cols = torch.nonzero(inside, as_tuple=True)
    weights = torch.stack([wa[rows, cols], wb[rows, cols], wc[rows, cols]], dim=1).double()
    tris = chunk[rows]
    depth = (weights * z[tri[tris]]).sum(dim=1)
    pixel = (y0[rows] + gy[0, cols].double()) * w + x0[rows] + gx[0, cols].double()
    return pixel.long(), depth, (weights, tris)


def grid_mesh(height: int, width: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """A regular mesh over an image: vertices every ``step`` pixels (the last row and column on the border),
    two triangles per cell. Returns ``(vertices (N, 2) as x, y pixel centres, triangles (T, 3))``."""
    xs = np.unique(np.append(np.arange(0, width, step), width - 1)).astype(np.float64)
    ys = np.unique(np.append(np.arange(0, height, step), height - 1)).astype(np.float64)
    gx, gy = np.meshgrid(xs, ys)
    verts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    nx, ny = len(xs), len(ys)
    i = np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)[None, :]
    i = i.ravel()
    tris = np.concatenate([np.stack([i, i + 1, i + nx], 1), np.stack([i + 1, i + nx + 1, i + nx], 1)])
    return verts, tris
