"""Data manifests: lists of scans to process (``data_manifests/*.yaml``, schema ``data_manifests/schema.yaml``).

Each entry has an ``id`` and either a ``path`` (read with :func:`cbct.io.read_scan`, ``format`` and reader
``options``) or a ``simulate`` mapping (:func:`cbct.commands.simulate.simulate_scan` arguments; a ``volume`` path
in it is relative to the manifest). Optional: ``geometry`` (replaces the file's; inline mapping or a YAML file, see
:func:`cbct.io.geometry_io.geometry_from_dict`), ``volume`` (reconstruction grid), ``sha256`` (verified before
reading), ``provenance`` (source, license, ...). Relative paths are relative to the manifest file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from cbct.io.errors import FormatError
from cbct.pipeline.schema import SchemaError, join_path, validate
from cbct.pipeline.spec import builtin_dir, load_yaml

__all__ = ["Manifest", "ManifestEntry", "load_manifest", "builtin_manifests", "sha256_file", "ChecksumError"]


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
        from cbct.io import read_scan
        from cbct.io.geometry_io import geometry_from_dict, grid_from_dict
        from cbct.scan import ScanError

        self.verify()
        if self.path is not None:
            options = dict(self.options)
            scan = read_scan(self.path, format=self.format, **options)
        else:
            from cbct.commands.simulate import simulate_scan

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


def load_manifest(ref: str | os.PathLike) -> Manifest:
    """Read and validate a manifest file (or a built-in one by name); errors name the file and field."""
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
        entries.append(ManifestEntry(
            id=item["id"], where=f"{where}: {at}", base_dir=base,
            path=_resolve(base, item["path"]) if "path" in item else None,
            format=item.get("format"), options=item.get("options", {}), geometry=item.get("geometry"),
            volume=item.get("volume"), sha256=item.get("sha256"), simulate=item.get("simulate"),
            provenance=item.get("provenance", {}), description=item.get("description", ""),
        ))
    return Manifest(path, doc.get("name", path.stem), doc.get("description", ""), tuple(entries))
