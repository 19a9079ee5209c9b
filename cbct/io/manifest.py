"""Data manifests: lists of scans to process (``data_manifests/*.yaml``, schema ``data_manifests/schema.yaml``).

Each entry has an ``id`` and either a ``path`` (read with :func:`cbct.io.read_scan`, ``format`` and reader
``options``) or a ``simulate`` mapping (:func:`cbct.simulation.scans.simulate_scan` arguments; a ``volume`` path
in it is relative to the manifest). Optional: ``geometry`` (replaces the file's; inline mapping or a YAML file, see
:func:`cbct.io.geometry_io.geometry_from_dict`), ``volume`` (reconstruction grid), ``sha256`` (verified before
reading), ``provenance`` (source, license, ...). Relative paths are relative to the manifest file.

Everything is checked when the manifest is loaded, before any scan costs time: every field by type (shapes and
counts must be whole numbers), inline and file geometries (:data:`GEOMETRY_SCHEMAS`), ``simulate`` arguments
(:data:`SIMULATE_SCHEMA`), and, when the manifest has a ``root`` (or the caller gives one), that every file lies
inside it. Errors name the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from cbct.io import read_scan
from cbct.io.errors import FormatError
from cbct.io.geometry_io import geometry_from_dict, grid_from_dict
from cbct.resources import builtin_dir, load_yaml
from cbct.scan import ScanError
from cbct.schema import SchemaError, join_path, validate
from cbct.simulation.scans import simulate_scan

__all__ = ["Manifest", "ManifestEntry", "load_manifest", "builtin_manifests", "sha256_file", "ChecksumError",
           "OutsideRootError", "SIMULATE_SCHEMA", "GEOMETRY_SCHEMAS"]

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 1}
_SHAPE3 = {"type": ["integer", "array"], "items": _COUNT, "minItems": 3, "maxItems": 3, "minimum": 1}
_SIZE3 = {"type": ["number", "array"], "items": _POS, "minItems": 3, "maxItems": 3, "exclusiveMinimum": 0}
_GRID = {"type": "object", "required": ["shape"], "additionalProperties": False,
         "properties": {"shape": _SHAPE3, "voxel_size": _SIZE3,
                        "offset": {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}}}
_DETECTOR = {"type": "array", "items": _COUNT, "minItems": 2, "maxItems": 2}
GEOMETRY_SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    "circular": {"type": "object", "additionalProperties": False,
                 "required": ["dso", "dsd", "detector_shape", "detector_pixel_size", "volume_shape", "voxel_size"],
                 "properties": {
                     "type": {"type": "string"}, "dso": _POS, "dsd": _POS, "detector_shape": _DETECTOR,
                     "detector_pixel_size": {"type": ["number", "array"], "items": _POS, "minItems": 2, "maxItems": 2,
                                             "exclusiveMinimum": 0},
                     "volume_shape": _SHAPE3, "voxel_size": _SIZE3, "n_views": _COUNT,
                     "angles_deg": {"type": "array", "items": _NUM, "minItems": 1}, "arc_deg": _POS,
                     "start_angle_deg": _NUM, "detector_offset": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                     "volume_offset": {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}}},
    "cone_vec": {"type": "object", "additionalProperties": False, "required": ["detector_shape", "volume"],
                 "properties": {
                     "type": {"type": "string"}, "vectors_file": {"type": "string", "minLength": 1},
                     "vectors": {"type": "array", "minItems": 1,
                                 "items": {"type": "array", "items": _NUM, "minItems": 12, "maxItems": 12}},
                     "detector_shape": _DETECTOR, "volume": _GRID,
                     "angles_deg": {"type": "array", "items": _NUM, "minItems": 1}}},
}
"""Schemas of an inline geometry mapping (and of a geometry YAML file), by its ``type``."""

SIMULATE_SCHEMA: Mapping[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "phantom": {"type": ["string", "null"], "enum": ["shepp-logan", "dental", None]},
        "volume": {"type": "string", "minLength": 1}, "volume_format": {"type": "string"},
        "volume_options": {"type": "object"}, "scale": _POS,
        "flip": {"type": "array", "items": {"type": "string", "enum": ["z", "y", "x"]}, "maxItems": 3},
        "downsample": _COUNT, "size": {"type": "integer", "minimum": 2}, "fov": _POS, "views": _COUNT,
        "arc_deg": {"type": "number", "exclusiveMinimum": 0, "maximum": 360}, "dso": _POS, "dsd": _POS,
        "sparse": {"type": ["integer", "null"], "minimum": 1}, "motion": {"type": ["string", "null"]},
        "max_rotation_deg": {"type": "number", "minimum": 0}, "max_translation_mm": {"type": "number", "minimum": 0},
        "noise": {"type": ["number", "null"], "exclusiveMinimum": 0}, "electronic_sigma": {"type": "number", "minimum": 0},
        "raw": {"type": "boolean"}, "metal": {"type": "boolean"}, "seed": {"type": "integer", "minimum": 0},
        "id": {"type": "string"},
    },
}
"""Schema of a manifest entry's ``simulate`` mapping (the arguments of ``simulate_scan``)."""


class OutsideRootError(SchemaError):
    """A manifest names a file outside the folder its scans are confined to."""


class ChecksumError(FormatError):
    """A file's sha256 differs from the manifest's."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _resolve(base: pathlib.Path, p: str) -> pathlib.Path:
    path = pathlib.Path(os.path.expanduser(p))
    return path if path.is_absolute() else (base / path)


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One scan of a manifest (paths already resolved against the manifest's folder)."""

    id: str
    where: str
    base_dir: pathlib.Path
    path: pathlib.Path | None = None
    format: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    geometry: Mapping[str, Any] | str | None = None
    volume: Mapping[str, Any] | None = None
    sha256: str | None = None
    simulate: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The entry as the manifest wrote it (part of each result's fingerprint)."""

    def verify(self) -> None:
        """Check that the input exists and matches its sha256 (``FileNotFoundError`` / :class:`ChecksumError`)."""
        target = self.checksum_target()
        if target is None:
            return
        if not target.exists():
            raise FileNotFoundError(f"scan '{self.id}': file not found: {target}")
        if self.sha256:
            if not target.is_file():
                raise ChecksumError(f"scan '{self.id}': sha256 is given but {target} is a folder (checksums apply to files)")
            actual = sha256_file(target)
            if actual.lower() != self.sha256.lower():
                raise ChecksumError(f"scan '{self.id}': sha256 mismatch for {target}: manifest says {self.sha256.lower()}, "
                                    f"file has {actual} (wrong, changed or corrupt file)")

    def checksum_target(self) -> pathlib.Path | None:
        if self.path is not None:
            return self.path
        if self.simulate and isinstance(self.simulate.get("volume"), str):
            return _resolve(self.base_dir, self.simulate["volume"])
        return None

    def load(self):
        """Verify and read (or simulate) the scan; geometry/volume overrides and provenance applied."""
        self.verify()
        if self.path is not None:
            options = dict(self.options)
            scan = read_scan(self.path, format=self.format, **options)
        else:
            spec = dict(self.simulate or {})
            if isinstance(spec.get("volume"), str):
                spec["volume"] = _resolve(self.base_dir, spec["volume"])
            spec.setdefault("id", self.id)
            try:
                scan = simulate_scan(**spec)
            except TypeError as exc:
                raise ValueError(f"{self.where}.simulate: {exc}") from None
        geom = scan.geometry
        if self.geometry is not None:
            doc, base, where = self.geometry, self.base_dir, f"{self.where}.geometry"
            if isinstance(doc, str):
                gpath = _resolve(self.base_dir, doc)
                doc, base, where = load_yaml(gpath, "geometry"), gpath.parent, str(gpath)
                _check_geometry(doc, where, "")
            geom = geometry_from_dict(doc, where, base)
        if self.volume is not None:
            geom = geom.with_volume(grid_from_dict(self.volume, f"{self.where}.volume"))
        metadata = {**scan.metadata, "id": self.id, "manifest_entry": self.where}
        if self.provenance:
            metadata["provenance"] = dict(self.provenance)
        if self.sha256:
            metadata["sha256"] = self.sha256.lower()
        if geom is scan.geometry and metadata == scan.metadata:
            return scan
        try:
            return dataclasses.replace(scan, geometry=geom, metadata=metadata,
                                       reference=scan.reference if geom.volume == scan.geometry.volume else None)
        except ScanError as exc:
            raise ScanError(f"{exc} (geometry from {self.where})") from None

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"simulated ({self.simulate.get('phantom', 'volume')})"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated manifest: its entries in file order."""

    path: pathlib.Path
    name: str
    description: str
    entries: tuple[ManifestEntry, ...]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, ids: list[str] | None) -> list[ManifestEntry]:
        if not ids:
            return list(self.entries)
        known = {e.id for e in self.entries}
        missing = [i for i in ids if i not in known]
        if missing:
            raise KeyError(f"{self.path}: no scan(s) {missing}; ids: {sorted(known)}")
        return [e for e in self.entries if e.id in ids]


def _schema() -> Mapping[str, Any]:
    return load_yaml(builtin_dir("manifests") / "schema.yaml", "manifest schema")


def builtin_manifests() -> dict[str, pathlib.Path]:
    """Shipped manifests by name (``demo``, ``shared_data``)."""
    return {p.stem: p for p in sorted(builtin_dir("manifests").glob("*.yaml")) if p.stem != "schema"}


def _check_geometry(doc: Any, where: str, at: str) -> None:
    """Validate a geometry mapping against :data:`GEOMETRY_SCHEMAS` (errors name ``where`` and the field ``at``)."""
    if not isinstance(doc, Mapping):
        raise SchemaError(f"{where}: {at or '(top level)'}: expected a geometry mapping, got {type(doc).__name__}", at)
    kind = doc.get("type")
    if kind not in GEOMETRY_SCHEMAS:
        field = join_path(at, "type")
        raise SchemaError(f"{where}: {field}: must be 'circular' or 'cone_vec', got {kind!r}", field)
    validate(doc, GEOMETRY_SCHEMAS[kind], where, at)
    if kind == "circular" and ("n_views" in doc) == ("angles_deg" in doc):
        raise SchemaError(f"{where}: {at or '(top level)'}: give exactly one of n_views and angles_deg", at)
    if kind == "cone_vec" and ("vectors_file" in doc) == ("vectors" in doc):
        raise SchemaError(f"{where}: {at or '(top level)'}: give exactly one of vectors_file and vectors", at)


def _inside(path: pathlib.Path, roots: list[pathlib.Path], where: str, field: str) -> None:
    real = pathlib.Path(os.path.realpath(path))
    for root in roots:
        if real != root and root not in real.parents:
            link = real != pathlib.Path(os.path.normpath(path.absolute()))
            raise OutsideRootError(f"{where}: {field}: {path} is outside the root folder {root}"
                                   f"{' (through a symbolic link: it resolves to ' + str(real) + ')' if link else ''}; "
                                   "scans of this manifest are confined to it", field)


def load_manifest(ref: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Manifest:
    """Read and validate a manifest file (or a built-in one by name); errors name the file and field.

    Args:
        ref: the manifest file, or the name of a built-in one.
        root: confine every file the manifest names to this folder (in addition to the manifest's own ``root``).
    """
    path = pathlib.Path(ref)
    if not path.is_file():
        shipped = builtin_manifests()
        if len(path.parts) == 1 and path.name.removesuffix(".yaml") in shipped:
            path = shipped[path.name.removesuffix(".yaml")]
        else:
            raise FileNotFoundError(f"manifest not found: {ref} (built-in manifests: {', '.join(shipped)})")
    doc = load_yaml(path, "manifest")
    where = str(path)
    validate(doc, _schema(), where)
    base = path.resolve().parent
    roots = [pathlib.Path(os.path.realpath(_resolve(base, doc["root"])))] if "root" in doc else []
    if root is not None:
        roots.append(pathlib.Path(os.path.realpath(os.path.expanduser(root))))
    for r in roots:
        if not r.is_dir():
            raise FileNotFoundError(f"{where}: root folder not found: {r}")
    entries = []
    seen: dict[str, int] = {}
    for i, item in enumerate(doc["scans"]):
        at = join_path("scans", i)
        if item["id"] in seen:
            raise SchemaError(f"{where}: {at}.id: duplicate id {item['id']!r} (also scans[{seen[item['id']]}])", f"{at}.id")
        seen[item["id"]] = i
        if ("path" in item) == ("simulate" in item):
            raise SchemaError(f"{where}: {at}: give exactly one of path and simulate", at)
        if "simulate" in item and ("format" in item or "options" in item):
            raise SchemaError(f"{where}: {at}: format and options apply to files, not to simulate entries", at)
        files: list[tuple[str, pathlib.Path]] = []
        if "path" in item:
            files.append((f"{at}.path", _resolve(base, item["path"])))
        if "simulate" in item:
            validate(item["simulate"], SIMULATE_SCHEMA, where, f"{at}.simulate")
            if "volume" in item["simulate"]:
                files.append((f"{at}.simulate.volume", _resolve(base, item["simulate"]["volume"])))
        geometry = item.get("geometry")
        if isinstance(geometry, Mapping):
            _check_geometry(geometry, where, f"{at}.geometry")
            if "vectors_file" in geometry:
                files.append((f"{at}.geometry.vectors_file", _resolve(base, geometry["vectors_file"])))
        elif isinstance(geometry, str):
            gpath = _resolve(base, geometry)
            files.append((f"{at}.geometry", gpath))
        for field, file in files:
            _inside(file, roots, where, field)
        if isinstance(geometry, str) and gpath.is_file():
            gdoc = load_yaml(gpath, "geometry")
            _check_geometry(gdoc, str(gpath), "")
            if isinstance(gdoc, Mapping) and "vectors_file" in gdoc:
                _inside(_resolve(gpath.parent, gdoc["vectors_file"]), roots, str(gpath), "vectors_file")
        entries.append(ManifestEntry(
            id=item["id"], where=f"{where}: {at}", base_dir=base,
            path=_resolve(base, item["path"]) if "path" in item else None,
            format=item.get("format"), options=item.get("options", {}), geometry=geometry,
            volume=item.get("volume"), sha256=item.get("sha256"), simulate=item.get("simulate"),
            provenance=item.get("provenance", {}), description=item.get("description", ""), spec=item,
        ))
    return Manifest(path, doc.get("name", path.stem), doc.get("description", ""), tuple(entries))
