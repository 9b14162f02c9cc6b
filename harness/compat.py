"""Version skew between the host that writes artifacts and the device that loads them.

A device rarely has the host's runtimes (JetPack ships its own torch and onnxruntime; a Pi has
whatever pip gave it). Two facts decide whether a file loads at all, and both are known before
anything is shipped:
  - a torch.export `.pt2` loads only in a torch with the same torch.export schema major version
    (the host's is in the archive, the device's is read from its torch sources by runner.facts);
  - an `.onnx` loads only in an onnxruntime that reads its IR version (the device's maximum is
    probed by runner.facts).
When they do not match, the case fails before shipping with what needs which version and the
per-target setting that makes a file the device can read (`torch_format = "torchscript"`,
`onnx_opset = N`): see ExportFormat in harness/quantize/base.py. Anything else that fails to load
on the device (a torchao tensor subclass from another torchao release) is reported by the runner
with the artifact's description built here (`describe`).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional


# torch.onnx.export (dynamo) stamps IR 10 whatever the opset (torch 2.13); quantizers keep the input's IR
EXPORTER_IR = 10


def pt2_schema(path: Path) -> Optional[tuple[int, int]]:
    """The torch.export schema version a .pt2 archive was written with (None if not found)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if "/models/" in name and name.endswith(".json"):
                    version = json.loads(archive.read(name)).get("schema_version") or {}
                    if "major" in version:
                        return int(version["major"]), int(version.get("minor", 0))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def onnx_versions(path: Path) -> Optional[tuple[int, int]]:
    """(IR version, default-domain opset) of an ONNX file."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return int(model.ir_version), int(opset)


def ir_for_opset(opset: int) -> int:
    """The IR version of the first ONNX release with this opset (what a file at that opset needs)."""
    from onnx.helper import VERSION_TABLE

    return min(ir for _, ir, ai_onnx, *_ in VERSION_TABLE if ai_onnx >= opset)


def newest_opset_for_ir(max_ir: int, ceiling: int) -> Optional[int]:
    """The highest opset <= ceiling whose files an onnxruntime reading IR <= max_ir can load."""
    candidates = [opset for opset in range(7, ceiling + 1) if ir_for_opset(opset) <= max_ir]
    return max(candidates) if candidates else None


def _version(manifest: Mapping[str, Any], library: str) -> str:
    return str((manifest.get("libraries") or {}).get(library) or "an unknown version")


def describe(artifact_dir: Path, manifest: Mapping[str, Any]) -> str:
    """One phrase: what wrote this artifact, in which format version (for load errors on a device)."""
    path = Path(artifact_dir) / str(manifest.get("file", ""))
    framework = manifest.get("framework")
    needs = [f"{lib} {_version(manifest, lib)}" for lib in manifest.get("runtime_requires") or []
             if (manifest.get("libraries") or {}).get(lib)]
    extra = f"; it needs {', '.join(needs)}" if needs else ""
    if path.suffix == ".pte":
        written = ((manifest.get("notes") or {}).get("executorch_program") or {})
        ident = pte_program(path) or written.get("identifier") or "of an unknown format"
        return f"this .pte is ExecuTorch program {ident}, written by executorch {_version(manifest, 'executorch')}{extra}"
    if framework == "torch" and path.suffix == ".pt2":
        schema = pt2_schema(path)
        written = f" (torch.export schema {schema[0]}.{schema[1]})" if schema else ""
        return f"this .pt2 was exported by torch {_version(manifest, 'torch')}{written}{extra}"
    if framework == "torch":
        return f"this TorchScript file was written by torch {_version(manifest, 'torch')}{extra}"
    if framework == "onnxruntime" and path.suffix == ".onnx":
        versions = onnx_versions(path)
        if versions:
            return f"this .onnx has IR version {versions[0]} and opset {versions[1]}"
        return "this .onnx"
    libraries = ", ".join(f"{k} {v}" for k, v in (manifest.get("libraries") or {}).items())
    return f"this {path.suffix or 'artifact'} was written with {libraries or 'unknown libraries'}"


def pte_program(path: Path) -> Optional[str]:
    from harness.quantize.executorch_program import program_version

    return program_version(path)


def pte_problem(artifact_dir: Path, manifest: Mapping[str, Any], facts: Mapping[str, Any], target: str) -> Optional[str]:
    """Why the device cannot run this ExecuTorch program: no ExecuTorch runtime, or one that
    reads another program format (runner.facts' "executorch"; None when the device did not say).
    The recipe's artifact check (torch_executorch.program_reason) makes the case n/a with it."""
    if "runtimes" not in facts:
        return None  # the local machine's facts: the runner itself says what is missing
    found = facts.get("executorch") or {}
    written = _version(manifest, "executorch")
    if not found:
        return (f"{describe(artifact_dir, manifest)}; target {target} has no ExecuTorch runtime: install the bindings "
                f"(pip install executorch=={written.split('+')[0]}, which brings torch) or executorch-numpy-runtime "
                "(numpy only, Python >= 3.12) on the device")
    ident = pte_program(Path(artifact_dir) / str(manifest.get("file", "")))
    reads = list(found.get("programs") or [])
    if ident and reads and ident not in reads:
        return (f"{describe(artifact_dir, manifest)}; target {target} has {found.get('runtime')} {found.get('version')} "
                f"(ExecuTorch {found.get('executorch_version') or '?'}), which reads program format {', '.join(reads)} "
                f"and cannot load it. Install the runtime of the release that wrote it on the device "
                f"(pip install executorch=={written.split('+')[0]}), or build the programs on a host with the "
                f"device's executorch release")
    return None


def load_problem(artifact_dir: Path, manifest: Mapping[str, Any], facts: Mapping[str, Any], target: str) -> Optional[str]:
    """Why the device cannot load this artifact (before shipping it), or None when it can or we cannot tell."""
    formats = facts.get("formats") or {}
    runtimes = facts.get("runtimes") or {}
    path = Path(artifact_dir) / str(manifest.get("file", ""))
    framework = manifest.get("framework")
    if framework == "torch" and path.suffix == ".pt2" and formats.get("torch_export_schema"):
        ours, theirs = pt2_schema(path), str(formats["torch_export_schema"])
        if ours and theirs.split(".")[0] != str(ours[0]):
            return (f"{describe(artifact_dir, manifest)}; the device has torch {runtimes.get('torch', '?')} "
                    f"(schema {theirs}), which cannot load it: a .pt2 loads only in a torch with the same schema major "
                    f"version ({ours[0]}). Set torch_format = \"torchscript\" for target {target} (quantbench then writes "
                    f"TorchScript, which older torch loads) or install a torch with schema {ours[0]}.x on the device")
    if framework == "onnxruntime" and path.suffix == ".onnx" and formats.get("onnx_max_ir"):
        versions = onnx_versions(path)
        max_ir = int(formats["onnx_max_ir"])
        if versions and versions[0] > max_ir:
            opset = newest_opset_for_ir(max_ir, versions[1])
            fix = (f"Set onnx_opset = {opset} for target {target} (quantbench then writes opset {opset} with IR version "
                   f"{ir_for_opset(opset)})" if opset else "No opset this host can write is that old")
            return (f"{describe(artifact_dir, manifest)}; the device has onnxruntime {runtimes.get('onnxruntime', '?')}, "
                    f"which reads IR versions up to {max_ir} and cannot load it. {fix}, or upgrade onnxruntime on the device")
    return None


def skew_lines(facts: Mapping[str, Any], target: str) -> list[str]:
    """What `quantbench targets check` says about formats: this host's writers against the device's readers."""
    formats = facts.get("formats") or {}
    runtimes = facts.get("runtimes") or {}
    lines = []
    device_schema = formats.get("torch_export_schema")
    if device_schema:
        try:
            from torch._export.serde.schema import SCHEMA_VERSION

            host = f"{SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]}"
        except Exception:
            host = ""
        if host and host.split(".")[0] != str(device_schema).split(".")[0]:
            lines.append(f"torch {runtimes.get('torch')} reads .pt2 schema {device_schema}; this host writes {host}: "
                         f"set torch_format = \"torchscript\" for {target}")
        elif host:
            lines.append(f"torch {runtimes.get('torch')} reads this host's .pt2 files (schema {device_schema} vs {host})")
    max_ir = formats.get("onnx_max_ir")
    if max_ir:
        from harness.quantize.onnx_graph import OPSET

        line = f"onnxruntime {runtimes.get('onnxruntime')} reads ONNX IR versions up to {max_ir}"
        if int(max_ir) < EXPORTER_IR:
            opset = newest_opset_for_ir(int(max_ir), OPSET)
            line += f"; torch.onnx.export writes IR {EXPORTER_IR}: set onnx_opset = {opset} for {target}"
        lines.append(line)
    return lines
