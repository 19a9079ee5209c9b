"""Conversion between :class:`cbct.ConeGeometry` and RTK's ``ThreeDCircularProjectionGeometry`` and images.

Frames. cbct's world has the rotation axis along ``z`` and, at gantry angle ``a``, the source at
``dso * (cos a, sin a, 0)``. RTK's fixed frame has the rotation axis along ``Y`` and, at gantry angle ``theta``,
the source at ``sid * (sin theta, 0, cos theta)``, the detector row vector (its ``u``) along
``(cos theta, 0, -sin theta)`` and its column vector (its ``v``) along ``+Y``. The proper rotation (det = +1)

    (X, Y, Z)_rtk = FRAME @ (x, y, z)_cbct = (y, z, x)

maps one onto the other with ``theta = a`` and cbct's ``u`` onto RTK's ``u``. cbct's ``v`` points along ``-z``
(row 0 on top) and maps onto RTK's ``-Y``: a projection image for RTK holds cbct's rows in reverse order. A
detector offset ``(off_v, off_u)`` of :meth:`cbct.ConeGeometry.circular` is RTK's
``(ProjectionOffsetX, ProjectionOffsetY) = (off_u, -off_v)``.

Images. ITK images here have identity direction. ITK's origin is the centre of the first pixel, as cbct's
pixel-centre convention; a projection stack is an ITK image ``(u, v, view)`` whose array is ``(view, v', u)``
with ``v' = nv - 1 - v``, physical ``(u, v)`` coordinates centred on the detector (origin ``-(n - 1) / 2`` pixels)
so that RTK's detector position is cbct's detector centre. A volume ``(z, y, x)`` on cbct's grid is an ITK image
along RTK's ``(X, Y, Z) = (y, z, x)``, whose array is indexed ``(x, z, y)``.

``itk`` is imported inside the functions only: ``import cbct`` never needs it.
"""

from __future__ import annotations

import dataclasses
import logging
import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid

log = logging.getLogger(__name__)

__all__ = [
    "FRAME",
    "ImageInfo",
    "to_rtk",
    "from_rtk",
    "projection_info",
    "volume_info",
    "grid_from_info",
    "volume_to_itk",
    "itk_to_volume",
    "projections_to_itk",
    "itk_to_projections",
    "rtk_images",
]

#: Rotation taking cbct world coordinates ``(x, y, z)`` to RTK fixed-frame coordinates ``(X, Y, Z) = (y, z, x)``.
FRAME = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
FRAME.setflags(write=False)

# cbct volume array axes (z, y, x) -> ITK array axes (Z, Y, X)_rtk = (x, z, y)
_VOLUME_TO_ITK_AXES = (2, 0, 1)
_ITK_TO_VOLUME_AXES = (1, 2, 0)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """Geometry of an ITK image with identity direction, in ITK's ``(x, y, z)`` axis order.

    Attributes:
        origin: physical position of the centre of the first pixel, mm.
        spacing: pixel pitch, mm (for a projection stack the third entry is the spacing between views: 1).
        size: number of pixels along each axis.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin, dtype=np.float64)
        spacing = np.asarray(self.spacing, dtype=np.float64)
        size = np.asarray(self.size)
        if origin.shape != (3,) or spacing.shape != (3,) or size.shape != (3,):
            raise ValueError(f"origin, spacing and size must have 3 entries each, got {self.origin}, {self.spacing}, {self.size}")
        if not (np.all(np.isfinite(origin)) and np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
            raise ValueError(f"origin must be finite and spacing positive, got origin={self.origin}, spacing={self.spacing}")
        if not np.all(size == np.round(size)) or np.any(size <= 0):
            raise ValueError(f"size must be 3 positive integers, got {self.size}")
        object.__setattr__(self, "origin", tuple(float(x) for x in origin))
        object.__setattr__(self, "spacing", tuple(float(x) for x in spacing))
        object.__setattr__(self, "size", tuple(int(x) for x in size))

    @classmethod
    def from_itk(cls, image) -> ImageInfo:
        """The information of an ITK image (its largest possible region); its direction must be the identity."""
        direction = np.asarray(_itk().array_from_matrix(image.GetDirection()), dtype=np.float64)
        if not np.allclose(direction, np.eye(3), atol=1e-9):
            raise ValueError(f"image direction must be the identity, got {direction.tolist()}")
        region = image.GetLargestPossibleRegion()
        index = np.array([region.GetIndex()[d] for d in range(3)], dtype=np.float64)
        spacing = np.array([image.GetSpacing()[d] for d in range(3)], dtype=np.float64)
        origin = np.array([image.GetOrigin()[d] for d in range(3)], dtype=np.float64) + index * spacing
        return cls(tuple(origin), tuple(spacing), tuple(int(region.GetSize()[d]) for d in range(3)))

    def empty_image(self, value: float = 0.0, dtype=np.float32):
        """A new ITK image with this information, every pixel set to ``value``."""
        arr = np.full(self.size[::-1], value, dtype=dtype)
        return self.wrap(arr)

    def wrap(self, array: np.ndarray):
        """An ITK image holding (a copy of) ``array``, shaped ``size[::-1]``, with this information."""
        itk = _itk()
        array = np.ascontiguousarray(array)
        if array.shape != self.size[::-1]:
            raise ValueError(f"array must have shape {self.size[::-1]} (ITK size {self.size} reversed), got {array.shape}")
        image = itk.image_from_array(array)
        image.SetOrigin([float(x) for x in self.origin])
        image.SetSpacing([float(x) for x in self.spacing])
        return image


def _itk():
    try:
        import itk
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("RTK conversions need itk-rtk: pip install itk-rtk") from err
    return itk


def _rtk():
    _itk()
    from itk import RTK

    return RTK


# ---------------------------------------------------------------------------------------------- images
def projection_info(geom: ConeGeometry) -> ImageInfo:
    """ITK information of the projection stack of ``geom`` for RTK: ``(u, v, view)`` axes, detector-centred
    physical coordinates (the detector offset lives in the geometry), one view per unit along the third axis."""
    _check_geom(geom)
    nv, nu = geom.detector_shape
    dv, du = (float(x) for x in np.median(geom.pixel_sizes(), axis=0))
    return ImageInfo((-(nu - 1) / 2 * du, -(nv - 1) / 2 * dv, 0.0), (du, dv, 1.0), (nu, nv, geom.n_views))


def volume_info(grid: VolumeGrid) -> ImageInfo:
    """ITK information, in RTK's frame, of the volume on ``grid``."""
    if not isinstance(grid, VolumeGrid):
        raise TypeError(f"grid must be a cbct.VolumeGrid, got {type(grid).__name__}")
    first_xyz = grid.index_to_world()[:3, 3]  # world position of voxel (0, 0, 0)
    spacing_xyz = np.array(grid.voxel_size[::-1])
    shape_xyz = np.array(grid.shape[::-1])
    return ImageInfo(tuple(FRAME @ first_xyz), tuple(FRAME @ spacing_xyz), tuple(int(n) for n in FRAME @ shape_xyz))


def grid_from_info(info: ImageInfo) -> VolumeGrid:
    """The cbct grid of an RTK volume with information ``info`` (inverse of :func:`volume_info`)."""
    if not isinstance(info, ImageInfo):
        info = ImageInfo.from_itk(info)
    first_xyz = FRAME.T @ np.array(info.origin)
    spacing_xyz = FRAME.T @ np.array(info.spacing)
    shape_xyz = np.rint(FRAME.T @ np.array(info.size, dtype=np.float64)).astype(int)
    centre_xyz = first_xyz + (shape_xyz - 1) / 2 * spacing_xyz
    return VolumeGrid(tuple(int(n) for n in shape_xyz[::-1]), tuple(spacing_xyz[::-1]), tuple(centre_xyz[::-1]))


def _float_array(array, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``array`` as a NumPy array, checked to have ``shape`` (``what`` says which) and a float32/float64 dtype."""
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name} must have {what}, got {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {array.dtype}")
    return array


def volume_to_itk(volume: np.ndarray, grid: VolumeGrid):
    """An ITK image (RTK's frame) holding ``volume`` (nz, ny, nx) on ``grid``."""
    volume = _float_array(volume, "volume", grid.shape, f"the grid's shape {grid.shape}")
    return volume_info(grid).wrap(np.transpose(volume, _VOLUME_TO_ITK_AXES))


def itk_to_volume(image) -> tuple[np.ndarray, VolumeGrid]:
    """``(volume, grid)``: the (nz, ny, nx) array (a copy) and cbct grid of an RTK volume image."""
    itk = _itk()
    grid = grid_from_info(ImageInfo.from_itk(image))
    arr = np.ascontiguousarray(np.transpose(itk.array_from_image(image), _ITK_TO_VOLUME_AXES))
    return arr, grid


def projections_to_itk(projections: np.ndarray, geom: ConeGeometry):
    """An ITK image of the projection stack ``projections`` (n_views, nv, nu) of ``geom``, for :func:`to_rtk`."""
    projections = _float_array(projections, "projections", geom.projection_shape,
                               f"shape {geom.projection_shape} (the geometry's)")
    return projection_info(geom).wrap(projections[:, ::-1, :])


def itk_to_projections(image) -> np.ndarray:
    """The (n_views, nv, nu) array (a copy) of an RTK projection stack, rows in cbct's order (row 0 on top)."""
    itk = _itk()
    return np.ascontiguousarray(itk.array_from_image(image)[:, ::-1, :])


# ---------------------------------------------------------------------------------------------- geometry
def _check_geom(geom: object) -> None:
    if not isinstance(geom, ConeGeometry):
        raise TypeError(f"geom must be a cbct.ConeGeometry, got {type(geom).__name__}")


def to_rtk(geom: ConeGeometry):
    """RTK ``ThreeDCircularProjectionGeometry`` with the same views as ``geom``.

    Each view is given to RTK as its source, detector centre and unit row/column vectors (RTK derives its
    circular parameters from them), so any pose (tilts, motion) converts. Pair it with
    :func:`projections_to_itk` / :func:`projection_info` for the projection image and :func:`volume_to_itk` /
    :func:`volume_info` for the volume. RTK needs a rectangular pixel grid: the detector vectors must be
    orthogonal, and every view must have the same pixel pitch.
    """
    _check_geom(geom)
    itk = _itk()
    rtk = _rtk()
    pitch = geom.pixel_sizes()
    if not np.allclose(pitch, pitch[0], rtol=1e-9, atol=0.0):
        raise ValueError("geom: RTK needs the same detector pixel pitch in every view")
    u_hat = geom.u_vectors / pitch[:, 1:2]
    v_hat = geom.v_vectors / pitch[:, 0:1]
    skew = np.abs(np.einsum("ij,ij->i", u_hat, v_hat))
    if np.any(skew > 1e-9):
        raise ValueError(f"geom: RTK needs orthogonal detector u and v vectors (view {int(np.argmax(skew))} is skewed)")
    rows = u_hat @ FRAME.T
    cols = -v_hat @ FRAME.T  # cbct rows run down (-z), RTK's image rows run up (+Y)
    sources = geom.sources @ FRAME.T
    centres = geom.detector_centres @ FRAME.T
    out = rtk.ThreeDCircularProjectionGeometry.New()
    point = itk.Point[itk.D, 3]
    vector = itk.Vector[itk.D, 3]
    for i in range(geom.n_views):
        ok = out.AddProjection(
            point([float(x) for x in sources[i]]),
            point([float(x) for x in centres[i]]),
            vector([float(x) for x in rows[i]]),
            vector([float(x) for x in cols[i]]),
        )
        if not ok:
            raise ValueError(f"geom: RTK rejected view {i} (source {geom.sources[i]}, detector {geom.detector_centres[i]})")
    return out


def from_rtk(rtk_geometry, projections, volume) -> ConeGeometry:
    """The cbct geometry of an RTK geometry, its projection image and a volume.

    Args:
        rtk_geometry: an RTK ``ThreeDCircularProjectionGeometry``.
        projections: the projection stack: an ITK image or its :class:`ImageInfo` (pixel size, size and the
            physical coordinates of the detector pixels; its third size is the number of views).
        volume: the reconstruction grid: a :class:`cbct.VolumeGrid`, or an RTK volume image or its
            :class:`ImageInfo`.

    Returns:
        a :class:`cbct.ConeGeometry`; its nominal ``angles`` are RTK's gantry angles, unwrapped along the views
        (the first in ``[0, 2 pi)``).
    """
    itk = _itk()
    info = projections if isinstance(projections, ImageInfo) else ImageInfo.from_itk(projections)
    grid = volume if isinstance(volume, VolumeGrid) else grid_from_info(volume)
    n_views = len(rtk_geometry.GetGantryAngles())
    if info.size[2] != n_views:
        raise ValueError(f"projections: the image holds {info.size[2]} views, the RTK geometry {n_views}")
    nu, nv = info.size[0], info.size[1]
    du, dv = info.spacing[0], info.spacing[1]
    # physical detector coordinates of the centre of the pixel grid
    centre_pp = np.array([info.origin[0] + (nu - 1) / 2 * du, info.origin[1] + (nv - 1) / 2 * dv, 0.0, 1.0])
    vectors = np.empty((n_views, 12))
    for i in range(n_views):
        src = np.asarray(rtk_geometry.GetSourcePosition(i), dtype=np.float64)[:3]
        to_fixed = np.asarray(itk.array_from_matrix(rtk_geometry.GetProjectionCoordinatesToFixedSystemMatrix(i)))
        centre = to_fixed[:3] @ centre_pp
        vectors[i, 0:3] = FRAME.T @ src
        vectors[i, 3:6] = FRAME.T @ centre
        vectors[i, 6:9] = FRAME.T @ (to_fixed[:3, 0] * du)
        vectors[i, 9:12] = FRAME.T @ (-to_fixed[:3, 1] * dv)
    angles = np.unwrap(np.asarray(rtk_geometry.GetGantryAngles(), dtype=np.float64))
    angles += -2 * np.pi * np.floor(angles[0] / (2 * np.pi))
    return ConeGeometry(vectors, (nv, nu), grid, angles)


def rtk_images(geom: ConeGeometry, projections: np.ndarray | None = None, volume: np.ndarray | None = None):
    """Convenience: ``(rtk_geometry, projection_image, volume_image)`` for ``geom``; the images hold the given
    arrays, or zeros when an array is ``None``."""
    proj_img = projection_info(geom).empty_image() if projections is None else projections_to_itk(projections, geom)
    vol_img = volume_info(geom.volume).empty_image() if volume is None else volume_to_itk(volume, geom.volume)
    return to_rtk(geom), proj_img, vol_img
