"""The main job's phases from an empty cache, timed one by one (issue "A benchmark that can rank", §2).

`urbanln-bench run --method urbanln --city NY` does, in order: render the NY twin, pretrain the synthetic
foundation CLIP (on the pretraining world, which it renders first), build UrbanLN's caption sets (SV and
SI: captioners, refinement, consensus; the phrase grounder they need is trained on first use), pretrain
UrbanLN once per imagery, embed, probe every cell, and run the frame rows. This script runs the same
steps through the same functions, each after the previous one has filled the cache, so each phase's
time is its own; the last step is the real `run`, which then only pretrains, embeds and probes.

    URBANLN_BENCH_CACHE=$(mktemp -d) python benchmarks/main_job_phases.py --out phases.json

It is a script, not a pytest-benchmark: one pass takes as long as the main job (674 s from an empty
cache on a quiet 2-core Xeon, 2026-12-01; several times longer beside other heavy processes). `--profile smoke --scale tiny` runs the same phases in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--city", default="NY")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--method", default="urbanln")
    parser.add_argument("--out", type=Path, default=None, help="write the phases as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("URBANLN_BENCH_CACHE", tempfile.mkdtemp(prefix="urbanln-bench-phases-"))
    results = Path(tempfile.mkdtemp(prefix="urbanln-bench-phases-results-"))

    from urbanln_bench.backbones.foundation import foundation_clip
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.fit_inputs import needed_fit_inputs
    from urbanln_bench.method import get_method
    from urbanln_bench.runner import RunOptions, run, run_frame
    from urbanln_bench.specs import get_city

    phases: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, step):
        t = time.perf_counter()
        out = step()
        phases[name] = round(time.perf_counter() - t, 1)
        print(f"{name}: {phases[name]} s", flush=True)
        return out

    spec = get_city(args.city)
    data = timed("twin", lambda: open_city(spec, scale=args.scale))
    method = get_method(args.method)()
    method.run_profile = args.profile
    if hasattr(method, "clip_profile"):
        timed("foundation", lambda: foundation_clip(method.clip_profile()))
    for imagery in method.meta.native_imagery:
        for provider in needed_fit_inputs(method, imagery, args.profile):
            timed(f"{provider.name} {imagery}",
                  lambda provider=provider, imagery=imagery: provider.provide(method, data, data, imagery,
                                                                              args.profile, None))
    options = RunOptions(method=args.method, city=args.city, scale=args.scale, profile=args.profile,
                         results_dir=results)
    outcomes = timed("pretrain + embed + probe", lambda: run(options, log=lambda m: None))
    timed("frame rows", lambda: run_frame(options, outcomes))
    phases["total"] = round(time.perf_counter() - started, 1)
    report = {"city": args.city, "scale": args.scale, "profile": args.profile, "method": args.method,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "cache": os.environ["URBANLN_BENCH_CACHE"], "phases_s": phases}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
