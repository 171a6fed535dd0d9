"""Flow embedding throughput: read + QC + compensate + transform one large FCS file.

Writes a simulated 1,000,000-event FCS 3.1 file (13 channels, $SPILLOVER) into a temporary folder,
then times, best of ``--repeats``:

- the reference: flowkit's plain ``Sample(path)`` load (no compensation, no transform);
- for context, flowkit alone doing load + compensation + logicle (no QC, no scaling);
- recipe_mil: ``embed_flow_file`` with every event kept (``max_events=None``): header checks, flowio
  read, QC (non-finite, saturation), compensation from the file, logicle of the ten fluorescence
  channels, scatter scaling, fixed standardisation;
- for information, the same with asinh, and with the default ``max_events=10000`` (QC, then the
  subsample is compensated and transformed).

Peak memory is measured in separate runs (tracemalloc, which slows the code down), and the process's
maximum resident set size is printed at the end. The last line is the ratio of recipe_mil's events per
second (logicle, all events) to flowkit's load.

Run: ``python benchmarks/flow.py [--events N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import flowkit as fk
from _machine import bound_note, copy_gbs, load_note

from recipe_mil.embed.flow import FlowEmbedParams, embed_flow_file, resolve_panel
from recipe_mil.simulate.flow import FLOW_PANEL, FlowSimParams, simulate_flow_cohort


def flowkit_pipeline(path: Path) -> object:
    """The closest flowkit-only equivalent: load, compensate from $SPILLOVER, logicle (no QC, no scaling)."""
    sample = fk.Sample(str(path))
    sample.apply_compensation(sample.metadata["spillover"])
    sample.apply_transform(fk.transforms.LogicleTransform(262144, 0.5, 4.5, 0))
    return sample.get_events(source="xform")


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_mb(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = FlowSimParams(classes=("aml",), n_patients_per_class=1, events_mean=args.events, events_sd=0, seed=7)
        path = Path(simulate_flow_cohort(sim, tmp)["path"][0])
        print(
            f"wrote {path.name}: {args.events} events, {path.stat().st_size / 2**20:.1f} MiB "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        features = resolve_panel([path], FLOW_PANEL)
        logicle = FlowEmbedParams(panel=FLOW_PANEL, max_events=None)
        runs: dict[str, Callable[[], object]] = {
            "flowkit Sample load": lambda: fk.Sample(str(path)),
            "flowkit load + comp + logicle": lambda: flowkit_pipeline(path),
            "recipe_mil logicle, all events": lambda: embed_flow_file(path, logicle, features=features),
            "recipe_mil asinh, all events": lambda: embed_flow_file(
                path, replace(logicle, transform="asinh"), features=features
            ),
            "recipe_mil logicle, max_events=10000": lambda: embed_flow_file(
                path, replace(logicle, max_events=10_000), features=features
            ),
        }
        eps = {}
        gbs = copy_gbs()
        for name, fn in runs.items():
            seconds = best_time(fn, args.repeats)
            eps[name] = args.events / seconds
            print(f"{name:40s} {seconds:7.3f} s  {eps[name]:12,.0f} events/s {load_note()}", flush=True)
        # reading is decoding bytes: the bound is the file's bytes read and the float32 events written, at the
        # machine's copy bandwidth (compensation, 2 x 13 x 13 operations per event, is 0.3 GFLOP per million events)
        nbytes = path.stat().st_size + args.events * 13 * 4
        seconds = args.events / eps["recipe_mil logicle, all events"]
        print(f"recipe_mil logicle, all events: {bound_note(seconds, nbytes=nbytes, gbs=gbs)}")
        for name in ("flowkit Sample load", "flowkit load + comp + logicle", "recipe_mil logicle, all events"):
            print(f"{name:40s} peak traced memory {peak_mb(runs[name]):8.1f} MiB", flush=True)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS {maxrss:.0f} MiB; python {sys.version.split()[0]}, flowkit {fk.__version__}")
    ratio = eps["recipe_mil logicle, all events"] / eps["flowkit Sample load"]
    print(f"flow_read_ratio_vs_flowkit: {ratio:.3f}")


if __name__ == "__main__":
    main()
