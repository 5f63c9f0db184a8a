"""Leaderboard rows from hand-made records: improvement rows, native imagery, missing cells."""

from __future__ import annotations

import json
from pathlib import Path

from urbanln_bench.leaderboard import render_leaderboard


def write_record(results: Path, slug: str, display: str, task: str, imagery: str, r2: float, rmse: float,
                 *, native=("SI",), ours=False, role="method", ablation_of="", overrides=None,
                 variant=None, street_view_cap=None, config=None, predictions=None, seeds=(0, 1)) -> None:
    record = {
        "schema": 1, "key": f"{slug}-{task}-{imagery}", "harness_version": "test",
        "method": {"name": slug, "display_name": display, "variant": variant or display, "slug": slug, "version": "1",
                   "config": config or {}, "overrides": overrides or {}, "role": role, "ours": ours, "ablation_of": ablation_of,
                   "native_imagery": list(native),
                   "weight_source": "none", "uses_aux": []},
        "cell": {"id": f"NY/{task}/{imagery}", "city": "NY", "task": task, "imagery": imagery},
        "fit_city": "NY",
        "data": {"source": "synthetic", "manifest": "m" * 64, "scale": "small", "tag": "synthetic-small"},
        "split": {"strategy": "random", "seeds": list(seeds)}, "probe": {}, "per_seed": [],
        "metrics": {"r2": {"mean": r2, "std": 0.01, "n": 2}, "rmse": {"mean": rmse, "std": 0.01, "n": 2},
                    "mae": {"mean": rmse / 2, "std": 0.01, "n": 2}},
    }
    if street_view_cap:
        record["data"]["street_view_cap"] = street_view_cap
    if predictions:  # seed -> (test region ids, y, MLP predictions): what the paired comparisons read
        record["per_seed"] = [{"seed": seed, "r2": r2, "rmse": rmse, "mae": rmse / 2,
                               "predictions": {"ids": list(ids), "y": list(y), "mlp": list(pred), "ridge": list(pred)}}
                              for seed, (ids, y, pred) in sorted(predictions.items())]
    path = results / "synthetic-small" / "NY" / slug / f"{task}_{imagery}_random.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_the_header_says_how_many_probe_seeds_the_records_have(tmp_path: Path):
    """One seed set: named once. Several (a store half re-run with more seeds): each with its record count, and
    a warning that means over different seeds are not comparable digit for digit."""
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.00, seeds=range(5))
    write_record(tmp_path, "resnet18", "ResNet-18", "Crime", "SI", 0.20, 2.00, seeds=range(5))
    assert "\nProbe seeds: 5 seeds (0–4) in every record.\n" in render_leaderboard(tmp_path)
    write_record(tmp_path, "tile2vec", "Tile2Vec", "Pop", "SI", 0.30, 1.00, seeds=range(10))
    write_record(tmp_path, "random-features", "Random", "Pop", "SI", 0.10, 1.00, seeds=(3, 7))
    text = render_leaderboard(tmp_path)
    assert ("Probe seeds: 5 seeds (0–4) in 2 records; 10 seeds (0–9) in 1 record; 2 seeds (3, 7) in 1 record. "
            "A paired comparison uses the seeds both records have") in text


def test_improvement_rows_and_missing_cells(tmp_path: Path):
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.00)
    write_record(tmp_path, "resnet18", "ResNet-18", "Crime", "SI", 0.20, 2.00)
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SV", 0.90, 0.10)  # not native: extended table only
    write_record(tmp_path, "urbanln", "UrbanLN", "Pop", "SV", 0.50, 0.80, native=("SV", "SI"), ours=True)
    write_record(tmp_path, "urbanln", "UrbanLN", "Pop", "SI", 0.30, 1.10, native=("SV", "SI"), ours=True)
    text = render_leaderboard(tmp_path)
    main = text.split("### NY — every imagery variant")[0]
    # (0.50 - 0.40) / 0.40 = 25.0 % for R²; (1.00 - 0.80) / 1.00 = 20.0 % for RMSE; POI missing everywhere
    assert "| Improvement (UrbanLN+SV) |  |  | 25.0% | 20.0% | 20.0% | — | — | — | — | — | — |" in main
    assert "| Improvement (UrbanLN+SI) |  |  | -25.0% | -10.0% | -10.0% |" in main
    assert "0.900" not in main and "0.900 ± 0.010" in text  # the non-native SV row only in the extended table
    assert "| ResNet-18 | SI | none | 0.400 ± 0.010 | 1.000 ± 0.010 | 0.500 ± 0.010 | 0.200 ± 0.010 |" in main
    assert render_leaderboard(tmp_path) == text


def test_ablations_and_overrides_get_their_own_table(tmp_path: Path):
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.00)
    write_record(tmp_path, "urbanln", "UrbanLN", "Pop", "SI", 0.50, 0.80, native=("SV", "SI"), ours=True)
    write_record(tmp_path, "urbanln-no-ipsi", "UrbanLN w/o IPSI", "Pop", "SI", 0.45, 0.90, native=("SV", "SI"),
                 ours=True, ablation_of="urbanln")
    write_record(tmp_path, "urbanln__mu=0.3", "UrbanLN", "Pop", "SI", 0.52, 0.79, native=("SV", "SI"), ours=True,
                 overrides={"mu": 0.3}, variant="UrbanLN [mu=0.3]")
    text = render_leaderboard(tmp_path)
    main = text.split("### NY — ablations")[0]
    assert "UrbanLN+SI w/o IPSI" not in main and "mu=0.3" not in main  # the paper table: full method only
    assert "| Improvement (UrbanLN+SI) |" in main and "Improvement (UrbanLN+SI w/o IPSI)" not in main
    ablations = text.split("### NY — ablations")[1].split("### NY — every imagery variant")[0]
    assert "| UrbanLN+SI w/o IPSI | SI | 0.450 ± 0.010 | — | — | -0.050 | — | — |" in ablations
    assert "| UrbanLN+SI [mu=0.3] | SI | 0.520 ± 0.010 | — | — | +0.020 | — | — |" in ablations
    assert "| UrbanLN+SI | SI | 0.500 ± 0.010 | — | — | — | — | — |" in ablations


def test_street_view_cap_is_stated_under_the_city_heading(tmp_path: Path):
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.00)
    assert "street view" not in render_leaderboard(tmp_path)
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SV", 0.40, 1.00, street_view_cap=2)
    text = render_leaderboard(tmp_path)
    assert "(NY twin, scale `small`), at most 2 street views per region (`max_street_views` in its city file)." in text


def test_summary_names_winners_gaps_to_the_ceiling_and_rank_agreement(tmp_path: Path):
    from urbanln_bench.leaderboard import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0 and spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 2], [1, 2]) is None and abs(spearman([1, 1, 2, 3], [1, 2, 3, 4]) - 0.9487) < 1e-4
    # paper NY Pop R²: ResNet-18 -0.079 < Tile2Vec 0.096 < UrbanCLIP 0.448 < UrbanLN+SI 0.725
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.0)
    write_record(tmp_path, "tile2vec", "Tile2Vec", "Pop", "SI", 0.50, 1.0)
    write_record(tmp_path, "urbanclip", "UrbanCLIP", "Pop", "SI", 0.45, 1.0)
    write_record(tmp_path, "urbanln", "UrbanLN", "Pop", "SI", 0.55, 1.0, native=("SV", "SI"), ours=True)
    write_record(tmp_path, "oracle", "Oracle", "Pop", "SI", 0.80, 0.5, native=("SV", "SI"), role="oracle")
    write_record(tmp_path, "hist", "Colour histogram", "Pop", "SI", 0.42, 1.0, native=("SV", "SI"), role="floor")
    text = render_leaderboard(tmp_path)
    # ours: ResNet 0.40 < UrbanCLIP 0.45 < Tile2Vec 0.50 < UrbanLN 0.55 → ranks 1,3,2,4 vs paper 1,2,3,4: ρ = 0.8
    # no test predictions in these records: no ties or ridge winner to show ("—")
    assert ("| Pop | UrbanLN+SI (0.550) | Tile2Vec (0.500) | — | — | Colour histogram (SI) (0.420) | 0.250 | "
            "UrbanLN+SI (0.725) | +0.80 (4) |") in text
    assert "| ResNet-18 | SI | 0.400 |" in text and "| UrbanLN+SI | SI | 0.250 |" in text


def test_the_information_chain_and_the_gap_share_frame_the_methods(tmp_path: Path):
    write_record(tmp_path, "tile2vec", "Tile2Vec", "Pop", "SI", 0.50, 1.0)
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.30, 1.0)
    write_record(tmp_path, "hist", "Colour histogram", "Pop", "SI", 0.40, 1.0, native=("SV", "SI"), role="floor")
    write_record(tmp_path, "sg", "Scene-graph ceiling", "Pop", "SI", 0.60, 1.0, native=("SV", "SI"), role="ceiling")
    write_record(tmp_path, "text", "Caption text (consensus)", "Pop", "SI", 0.55, 1.0, native=("SV", "SI"),
                 role="reference")
    write_record(tmp_path, "oracle", "Oracle", "Pop", "SI", 0.80, 0.5, native=("SV", "SI"), role="oracle")
    text = render_leaderboard(tmp_path)
    assert "| Pop | SI | 0.800 | 0.600 | 0.550 | 0.500 | 0.400 |" in text  # oracle → ceiling → text → best → floor
    assert "| Tile2Vec | SI | 50 % | — | — | 50 % |" in text and "| ResNet-18 | SI | -50 % | — | — | -50 % |" in text
    # framing rows never win: the winner is the best competing method
    assert "| Pop | Tile2Vec (0.500) | ResNet-18 (0.300) |" in text
    assert "Caption text (consensus) (SI) *(reference)*" in text and "*(ceiling)*" in text


def test_caption_stages_are_compared_per_imagery(tmp_path: Path):
    write_record(tmp_path, "resnet18", "ResNet-18", "Pop", "SI", 0.40, 1.00)
    for slug, display, r2 in (("caption-text-raw", "Caption text (raw)", 0.50),
                              ("caption-text-refined", "Caption text (refined)", 0.56),
                              ("caption-text-consensus", "Caption text (consensus)", 0.53)):
        write_record(tmp_path, slug, display, "Pop", "SI", r2, 1.0, native=("SV", "SI"), role="reference")
    write_record(tmp_path, "caption-text-raw", "Caption text (raw)", "Pop", "SV", 0.30, 1.0, native=("SV", "SI"),
                 role="reference")  # SV has one stage only: nothing to compare
    text = render_leaderboard(tmp_path)
    stages = text.split("### NY — caption stages")[1].split("### NY — every imagery variant")[0]
    # records without stored predictions: the plain difference of the means, no interval
    assert "| refined − raw | SI | +0.060 | — | — |" in stages
    assert "| consensus − refined | SI | -0.030 | — | — |" in stages
    assert "| consensus − raw | SI | +0.030 | — | — |" in stages
    assert "| SV |" not in stages


def test_no_caption_stage_table_without_two_stages(tmp_path: Path):
    write_record(tmp_path, "caption-text-raw", "Caption text (raw)", "Pop", "SI", 0.50, 1.0, native=("SV", "SI"),
                 role="reference")
    assert "caption stages" not in render_leaderboard(tmp_path)


def write_pop_record(results: Path, slug: str, name: str, display: str, role: str, fit_city: str,
                     noise: float) -> None:
    """A NY/Pop/SI record with stored test predictions (truth + noise of the given size, two seeds)."""
    import numpy as np

    rng = np.random.default_rng(int(noise * 1000))
    per_seed = []
    for seed in (0, 1):
        y = np.random.default_rng(seed).normal(5.0, 1.0, 60)
        pred = y + rng.normal(0.0, noise, 60)
        r2 = 1 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
        per_seed.append({"seed": seed, "r2": r2, "rmse": 1.0, "mae": 1.0, "predictions": {
            "ids": [f"r{seed}c{i:03d}" for i in range(60)], "y": y.tolist(), "mlp": pred.tolist(),
            "ridge": pred.tolist()}})
    r2s = [s["r2"] for s in per_seed]
    record = {
        "schema": 1, "key": f"{slug}-pop", "harness_version": "test",
        "method": {"name": name, "display_name": display, "variant": display, "slug": slug, "version": "1",
                   "config": {}, "overrides": {}, "role": role, "ours": name == "urbanln", "ablation_of": "",
                   "native_imagery": ["SV", "SI"], "weight_source": "none", "uses_aux": []},
        "cell": {"id": "NY/Pop/SI", "city": "NY", "task": "Pop", "imagery": "SI"}, "fit_city": fit_city,
        "data": {"source": "synthetic", "manifest": "m" * 64, "scale": "small", "tag": "synthetic-small"},
        "split": {"strategy": "random", "seeds": [0, 1]}, "probe": {}, "per_seed": per_seed,
        "metrics": {"r2": {"mean": sum(r2s) / 2, "std": 0.01, "n": 2}, "rmse": {"mean": 1.0, "std": 0.0, "n": 2},
                    "mae": {"mean": 1.0, "std": 0.0, "n": 2}},
    }
    path = results / "synthetic-small" / "NY" / slug / "Pop_SI_random.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_transfer_grid_gives_the_starting_weights_and_paired_differences_from_the_diagonal(tmp_path: Path):
    write_pop_record(tmp_path, "urbanln", "urbanln", "UrbanLN", "method", "NY", noise=0.3)
    write_pop_record(tmp_path, "urbanln__from-SZ", "urbanln", "UrbanLN", "method", "SZ", noise=0.8)
    write_pop_record(tmp_path, "clip-start", "clip-start", "CLIP (starting weights)", "start", "NY", noise=0.3)
    section = render_leaderboard(tmp_path).split("## Transfer")[1]
    grid, deltas = section.split("Δ Pop R² from in-city pretraining:")
    assert "| *CLIP (starting weights)* |" in grid  # the start row under the pretraining cities
    # SZ → NY is far worse than in-city: its interval excludes 0; the start has the same predictions' noise
    # level but other draws, so it is compared too; the diagonal itself has no difference
    sz = next(line for line in deltas.splitlines() if line.startswith("| SZ |"))
    assert "[" in sz and " ≈" not in sz and sz.split("|")[3].strip().startswith("-")  # columns: SZ, NY
    assert not any(line.startswith("| NY |") for line in deltas.splitlines())  # the diagonal; nothing probed SZ
    assert "| *CLIP (starting weights)* | " in deltas


def test_the_mu_sweep_across_cities_sets_the_twin_beside_table_4(tmp_path: Path):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [f"r{i:03d}" for i in range(300)]
    y = {seed: rng.normal(5.0, 1.0, len(ids)) for seed in (0, 1)}

    def predicted(sd: float, draw: int) -> dict:
        noise = np.random.default_rng(draw)
        return {seed: (ids, y[seed].tolist(), (y[seed] + noise.normal(0.0, sd, len(ids))).tolist()) for seed in y}

    full = predicted(0.6, 1)
    kw = {"native": ("SV", "SI"), "ours": True, "config": {"mu": 0.5}}
    write_record(tmp_path, "urbanln", "UrbanLN", "Pop", "SV", 0.55, 0.8, predictions=full, **kw)
    assert "μ sweep across cities" not in render_leaderboard(tmp_path)  # the full method alone is no sweep
    for mu, r2, preds in ((0.3, 0.50, full), (0.4, 0.60, predicted(0.1, 2)), (0.6, 0.30, predicted(1.5, 3)),
                          (0.7, 0.52, None)):
        write_record(tmp_path, f"urbanln__mu={mu}", "UrbanLN", "Pop", "SV", r2, 0.8, overrides={"mu": mu},
                     variant=f"UrbanLN [mu={mu}]", predictions=preds, **kw)
    write_record(tmp_path, "urbanln-no-msd", "UrbanLN w/o MSD", "Pop", "SV", 0.9, 0.8, ablation_of="urbanln",
                 predictions=full, **kw)  # an ablation, not a point of the sweep
    section = render_leaderboard(tmp_path).split("## μ sweep across cities")[1]
    # paper NY SV (Table 4): 0.658 / 0.669 / 0.676 / 0.674, peak 0.5; no SI sweep on the twin, so no SI rows
    assert "| NY | SV | paper-reported | 0.658 | 0.669 | 0.676 | 0.674 | — | 0.5 |" in section
    # identical predictions: tied; far better / worse ones: significant; no predictions: no mark
    assert "| NY | SV | twin | 0.500 ≈ | 0.600 ▲ | 0.550 | 0.300 ▼ | 0.520 | 0.4 |" in section
    assert "| NY | SI |" not in section and "0.900" not in section
    assert "the twin peaks where the paper does in 0 of 1 sweeps; in 0 of 1 twin sweeps no μ differs" in section
