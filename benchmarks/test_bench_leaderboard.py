"""Leaderboard cost on the committed records:

- rendering leaderboard.md's text (records read, paired bootstraps, tabulate tables);
- drawing its figures (matplotlib, Agg);
- reading the store into a DataFrame (results.load).

    python -m pytest benchmarks/test_bench_leaderboard.py --benchmark-enable -n 0
"""

from __future__ import annotations

from pathlib import Path

from urbanln_bench import results
from urbanln_bench.figures import render_png
from urbanln_bench.leaderboard import build_leaderboard

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_leaderboard_text(benchmark):
    board = benchmark.pedantic(build_leaderboard, args=(RESULTS,), rounds=3, iterations=1)
    assert board.text.startswith("# urbanln-bench leaderboard")


def test_leaderboard_figures(benchmark):
    figures = build_leaderboard(RESULTS).figures
    drawn = benchmark.pedantic(lambda: [render_png(f) for f in figures], rounds=3, iterations=1)
    assert len(drawn) == len(figures)


def test_results_load(benchmark):
    frame = benchmark.pedantic(results.load, args=(RESULTS,), rounds=3, iterations=1)
    assert len(frame) > 0
