"""Benchmarks use their own cache (set URBANLN_BENCH_CACHE to reuse one across runs)."""

import os
import tempfile

os.environ.setdefault("URBANLN_BENCH_CACHE", tempfile.mkdtemp(prefix="urbanln-bench-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
