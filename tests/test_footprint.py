"""The runner's runtime footprint (harness/runner/footprint.py): the MB on disk of the files a
distribution's metadata lists. Its fast path reads an installed wheel's RECORD itself; the
oracle here is importlib.metadata's own listing, each file located by metadata."""
from __future__ import annotations

import os
from importlib import metadata
from typing import Optional

import pytest

from harness.runner import footprint


def located_mb(found) -> float:
    """The figure as metadata's own API gives it: every listed file, located, that exists."""
    total = 0
    for entry in found.files or ():
        path = str(entry.locate())
        if os.path.exists(path):
            total += os.stat(path).st_size
    return round(total / (1024.0 * 1024.0), 1)


def test_installed_runtimes_measure_what_metadata_locates():
    measured = 0
    for runtime in footprint.REPORTED:
        for dist in footprint.RUNTIME_DISTRIBUTIONS[runtime]:
            try:
                found = metadata.distribution(dist)
            except metadata.PackageNotFoundError:
                continue
            assert footprint.distribution_mb(dist) == located_mb(found), dist
            measured += 1
    assert measured, "no runtime distribution installed to measure"


def _dist_info(site, name: str, record: Optional[str] = None, sources: Optional[str] = None):
    """A distribution folder under `site`: dist-info with a RECORD, or egg-info with SOURCES.txt."""
    kind = "dist-info" if record is not None else "egg-info"
    meta = site / f"{name}-1.0.{kind}"
    meta.mkdir(parents=True)
    (meta / "METADATA" if record is not None else meta / "PKG-INFO").write_text(f"Name: {name}\nVersion: 1.0\n")
    if record is not None:
        (meta / "RECORD").write_text(record)
    if sources is not None:
        (meta / "SOURCES.txt").write_text(sources)
    return metadata.Distribution.at(meta)


@pytest.mark.parametrize("kind", ["record", "egg-info"])
def test_listed_files_are_summed_where_metadata_locates_them(tmp_path, kind):
    site = tmp_path / "lib" / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_bytes(b"x" * 300_000)
    (site / "pkg" / "lib,with comma.so").write_bytes(b"y" * 500_000)  # a quoted RECORD field
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pkg-tool").write_bytes(b"z" * 250_000)  # outside site-packages: ../../bin
    if kind == "record":
        found = _dist_info(site, "pkg", record=(
            "pkg/__init__.py,sha256=abc,300000\n"
            '"pkg/lib,with comma.so",sha256=def,500000\n'
            "../../bin/pkg-tool,sha256=ghi,250000\n"
            "pkg/gone.py,sha256=jkl,99\n"  # listed, no longer on disk: counts nothing
            "pkg-1.0.dist-info/RECORD,,\n"))
    else:
        found = _dist_info(site, "pkg", sources="pkg/__init__.py\npkg/lib,with comma.so\n")
    expected = located_mb(found)
    assert expected > 0.5  # the files were found at all
    assert footprint.installed_mb(found) == expected
