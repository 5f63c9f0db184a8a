"""``urbanln-bench profile``: parameters and inference speed per method (the paper's Figure 4).

For each method: total parameters of its encoder(s), the parameters its city pretraining updates
(trainable), and inference images/s of the image encoder on random pixels at the method's input size,
on this CPU or a GPU (``--device cuda``, bf16 autocast as in embedding). Architectures are built with
random weights: weights change neither the counts nor the speed, so nothing is pretrained here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from urbanln_bench.errors import UserError


@dataclass
class Architecture:
    """What ``Method.architecture`` returns: the inference encoder (pixels → features) and counts."""

    encoder: Any  # torch.nn.Module taking (B, 3, S, S)
    total: int  # every parameter of the method's model(s), text towers and heads included
    trainable: int  # parameters its city pretraining updates (0 for frozen, off-the-shelf encoders)
    note: str = ""


def measure_images_per_second(encoder, input_size: int, device: str = "cpu", batch_size: int = 32,
                              batches: int = 4, seed: int = 0) -> float:
    """Images/s of ``encoder`` over ``batches`` batches after one warm-up batch, without gradients."""
    import torch

    device_t = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, 3, input_size, input_size, generator=generator).to(device_t)
    encoder = encoder.to(device_t).eval()
    from urbanln_bench.embed import autocast

    with torch.no_grad(), autocast(device_t):
        encoder(pixels)
        if device_t.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(batches):
            encoder(pixels)
        if device_t.type == "cuda":
            torch.cuda.synchronize()
    return batch_size * batches / (time.perf_counter() - started)


def profile_methods(names: list[str], profile: str = "cpu", device: str = "cpu", batch_size: int = 32,
                    batches: int = 4) -> list[dict[str, Any]]:
    from urbanln_bench.method import get_method
    from urbanln_bench.profiles import check_profile

    check_profile(profile)
    rows = []
    for name in names:
        method = get_method(name)({})
        method.run_profile = profile
        arch = method.architecture()
        row: dict[str, Any] = {"method": name, "display_name": method.meta.display_name, "profile": profile,
                               "device": device, "input_size": int(method.input_size)}
        if arch is None:
            row.update({"total": None, "trainable": None, "images_per_second": None,
                        "note": "no neural encoder to profile"})
        else:
            try:
                speed = measure_images_per_second(arch.encoder, int(method.input_size), device, batch_size, batches)
            except RuntimeError as exc:
                raise UserError(f"profiling '{name}' on {device} failed: {str(exc)[:300]}") from exc
            trainable, note = arch.trainable, arch.note
            if method.meta.role == "start" and trainable:
                # a starting-weights row is its method's encoder frozen before any step (docs/architecture.md#roles):
                # the architecture is the method's, but its city pretraining updates nothing
                trainable, note = 0, "starting weights: the method's encoder before any step, frozen"
            row.update({"total": arch.total, "trainable": trainable,
                        "images_per_second": round(speed, 1), "note": note})
        rows.append(row)
    return rows
