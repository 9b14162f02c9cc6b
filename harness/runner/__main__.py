"""Entry point: `python -m runner CONFIG.json` -> writes the result JSON and outputs .npz.

The config is a RunnerConfig and the result a RunnerResult (protocol.py says what each key
means and the format-version rule). budget_s: the evaluation pass is skipped, saying why in
`evaluation_skipped`, when the timed median projects it past the budget; evaluate false: no
evaluation pass at all.

A backend has input_specs, output_names, details, prepare(feed) and run(prepared), and
may add: fetch(outputs) -> host arrays (when run leaves outputs on a device),
after_window() -> facts read right after the timed window (e.g. peak device memory),
post_details() -> facts that need an extra probing run, taken after every figure.
"""
from __future__ import annotations

from .phases import Phases, evaluation_over_budget

PHASES = Phases()  # before the imports below, so that their time is counted too

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from . import allocator, footprint, measure, sensors, system  # noqa: E402
from .protocol import FormatError, RunnerConfig, RunnerResult  # noqa: E402

# framework -> backend module inside this package (each imports only its own runtime)
BACKENDS = {
    "onnxruntime": "backend_onnxruntime",
    "torch": "backend_torch",
    "tflite": "backend_tflite",  # ai_edge_litert, else tflite_runtime, else tensorflow.lite
    # a torch recipe's .pte program (manifest runtime "executorch"): the ExecuTorch bindings,
    # else executorch-numpy-runtime (executorch_runtime.py)
    "executorch": "backend_executorch",
}

RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "tflite": "ai_edge_litert", "torch": "torch", "executorch": "executorch"}


class RunnerError(Exception):
    """A failure with a message a user can act on (no traceback needed)."""


def _load_backend(framework: str, target: str = ""):
    if framework not in BACKENDS:
        raise RunnerError(f"this runner has no backend for framework {framework!r} (known: {', '.join(sorted(BACKENDS))})")
    try:
        return importlib.import_module("." + BACKENDS[framework], __package__).Backend
    except ImportError as exc:
        missing = getattr(exc, "name", None) or RUNTIME_MODULES.get(framework, framework)
        host = system.describe()["host"]
        where = f"{target} (host {host}; {exc})" if target else f"{host} ({exc})"  # users know targets by name
        raise RunnerError(f"{missing} is not installed for {sys.executable} on {where}") from exc


def _cannot_load(config: RunnerConfig, exc: BaseException) -> str:
    module_name = RUNTIME_MODULES.get(config.framework, config.framework)
    version = getattr(sys.modules.get(module_name), "__version__", "(version unknown)")
    made = config.artifact_format or "this artifact"
    where = f" on {config.target}" if config.target else ""
    extras = [f"{m} {getattr(sys.modules.get(m), '__version__', '(not imported)')}"
              for m in (config.manifest or {}).get("runtime_requires") or [] if "." not in m]
    version += f" (with {', '.join(extras)})" if extras else ""
    message = " ".join(str(exc).split())
    message = message if len(message) <= 400 else message[:397] + "..."
    return f"{made}; {module_name} {version}{where} cannot load it: {type(exc).__name__}: {message}"


def _shape(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _check_inputs(input_specs, data, batch_size: int) -> None:
    """The artifact's inputs must match the data: same names, compatible shapes."""
    names = [name for name, _, _ in input_specs]
    missing = [n for n in names if n not in data]
    if missing:
        raise RunnerError(f"the model expects inputs {names} but the data has {sorted(data)}")
    for name, shape, dtype in input_specs:
        sample = data[name].shape[1:]
        expected = tuple(shape[1:]) if shape else ()
        wanted = (batch_size,) + tuple(sample)
        if len(expected) != len(sample) or any(e is not None and e != s for e, s in zip(expected, sample)) or (
            shape and shape[0] is not None and shape[0] != batch_size
        ):
            raise RunnerError(
                f"input {name!r}: the model expects shape {_shape(shape)} ({dtype}) "
                f"but the data gives batches of shape {_shape(wanted)} ({data[name].dtype})"
            )


def _over_budget(config: RunnerConfig, phases: Phases, latencies_ms, n_eval: int, batch_size: int) -> str:
    if not config.evaluate:  # e.g. a later round of a case whose outputs another process scored
        return "not requested (evaluate = false)"
    budget = config.budget_s
    return evaluation_over_budget(float(budget) if budget else None, phases.elapsed_s(), latencies_ms, n_eval, batch_size)


def run(config: RunnerConfig, phases: Phases = PHASES) -> RunnerResult:
    missing = config.missing()
    if missing:
        raise RunnerError(f"the config has no {', '.join(missing)}")
    threads = int(config.threads)
    batch_size = int(config.batch_size)
    malloc = allocator.settle()  # before anything is allocated for the model (allocator.py says why)
    with np.load(config.inputs, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    phases.mark("inputs")
    backend_cls = _load_backend(config.framework, config.target or "")
    phases.mark("runtime_import")
    # Sensors before the model loads: the NVML probe notes the GPU memory already in use.
    sensing = config.sensors or {}
    found, probes, none_reason = sensors.discover(sensing.get("profile", "generic-linux"), sensing.get("root", "/"),
                                                  sensing.get("settings", {}))
    phases.mark("sensors")

    load_started = time.perf_counter_ns()
    try:
        session = backend_cls(config.artifact, config.manifest, threads, config.options)
    except RunnerError:
        raise
    except Exception as exc:  # most often version skew: say what wrote the file and what reads it here
        raise RunnerError(_cannot_load(config, exc)) from exc
    init_ms = (time.perf_counter_ns() - load_started) / 1e6
    _check_inputs(session.input_specs, data, batch_size)
    phases.mark("load")

    timed_inputs, batch_note = measure.timed_batch(data, batch_size)
    bench_feed = session.prepare(timed_inputs)
    first_ms = measure.clock_ms(lambda: session.run(bench_feed))
    phases.mark("first")
    call = lambda: session.run(bench_feed)  # noqa: E731 - the exact call the loop times
    warmup_runs = measure.warmup(call, int(config.warmup_runs), float(config.warmup_s),
                                 max_s=float(config.max_duration_s))
    phases.mark("warmup")
    requested_s = float(config.min_duration_s)
    min_s, max_s = requested_s, float(config.max_duration_s)
    read_s = sensors.prime(found)  # a reader's start-up before any window, and its pace here
    window_s, why = sensors.min_window(found, sensing.get("settings", {}), read_s)
    if window_s > min_s:  # a sensor too coarse for a short window: run the loop longer
        min_s, max_s = window_s, max(max_s, window_s)
    timing, power = sensors.measure(
        found, probes, none_reason,
        lambda: measure.timed_loop(call, int(config.min_runs), min_s, max_s),
        # idle power needs as many readings as the window does
        idle_s=max(float(sensing.get("idle_s", 1.0)), window_s), profile=sensing.get("profile", "generic-linux"),
    )
    if min_s > requested_s:
        power["window_extended"] = f"timed loop extended from {requested_s:g} s to at least {min_s:g} s for the energy figure ({why})"
    details = dict(session.details, allocator=malloc)
    if hasattr(session, "after_window"):  # e.g. peak device memory, read before anything else runs
        details.update(session.after_window())
    phases.mark("timed")  # the sensors' idle wait and the timed window (duration_s)

    # Accuracy pass: same prepare+run path as the timed loop, over every evaluation sample,
    # unless the timed median says it would take the case past its time budget.
    n_eval = len(next(iter(data.values())))
    skipped = _over_budget(config, phases, timing["latencies_ms"], n_eval, batch_size)
    fetch = getattr(session, "fetch", lambda outputs: outputs)  # device outputs -> host arrays
    outputs = {} if skipped else measure.evaluation_pass(lambda feed: fetch(session.run(session.prepare(feed))), data,
                                                         batch_size, session.output_names)
    nonfinite = {name: int(np.size(v) - np.count_nonzero(np.isfinite(v))) for name, v in outputs.items()
                 if np.issubdtype(np.asarray(v).dtype, np.floating)}
    phases.mark("evaluation")
    np.savez(config.outputs, **outputs)
    phases.mark("outputs")

    peak_rss_mb = system.peak_rss_mb()
    if hasattr(session, "post_details"):  # facts that need an extra probing run, after every figure
        details.update(session.post_details())
        phases.mark("post_details")
    # MB on disk of the runtime that ran the case (its installed files; after every figure)
    details["runtime_footprint_mb"] = footprint.runtime_mb(session.runtime.split(".")[0])
    return RunnerResult(
        status="ok",
        reason="",
        init_ms=init_ms,
        first_ms=first_ms,
        warmup_runs=warmup_runs,
        threads=threads,
        batch_size=batch_size,
        runtime=session.runtime,
        runtime_version=session.runtime_version,
        runtime_details=details,
        nonfinite_outputs={k: v for k, v in nonfinite.items() if v},
        n_eval=0 if skipped else n_eval,
        evaluation_skipped=skipped,
        timed_batch_note=batch_note,  # set when the data cannot fill one batch and was repeated
        latencies_ms=timing["latencies_ms"],
        n_runs=timing["n_runs"],
        duration_s=timing["duration_s"],
        valid=timing["valid"],
        power=power,
        peak_rss_mb=peak_rss_mb,
    )


def main(argv) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m runner CONFIG.json\n")
        return 2
    PHASES.mark("imports")  # numpy and the runner's own modules
    with open(argv[1]) as f:
        raw = json.load(f)
    # where the result goes, even when the config itself cannot be read
    result_path = (raw.get("result") if isinstance(raw, dict) else None) or os.path.join(
        os.path.dirname(os.path.abspath(argv[1])), "result.json")
    started = time.time()
    try:
        config = RunnerConfig.from_dict(raw, f"config {argv[1]}")
        result_path = config.result or result_path
        result = run(config)
    except (RunnerError, FormatError) as exc:
        result = RunnerResult.failed(str(exc))
    except Exception as exc:  # the host turns this into an error row; the traceback goes to the log
        traceback.print_exc()
        result = RunnerResult.failed(f"{type(exc).__name__}: {exc}".strip())
    result = replace(result, system=system.describe(), pid=os.getpid(), wall_s=time.time() - started,
                     imported_modules=sorted({name.split(".")[0] for name in list(sys.modules)}))
    PHASES.mark("describe")
    result = replace(result, phases_s=PHASES.seconds)
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(result.to_json())
    os.replace(tmp, result_path)
    return 0 if result.ok else 1


def end_process(code: int) -> None:
    """Exit with `code` once everything written is out, without the interpreter's teardown.
    The result and outputs are on disk by now; what is left is freeing every module, and for
    torch that took 0.3-0.9 s of each runner process (the host waits for the exit). Python's
    streams and C stdio's (a runtime's printf into the pipe, which only exit() would flush)
    are flushed first, so the host's log gets every line."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (ImportError, OSError, AttributeError):  # no C library to ask (not Linux/macOS): a normal exit
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    end_process(main(sys.argv))
