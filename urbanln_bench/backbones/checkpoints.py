"""Loading user checkpoint files safely: ``torch.load(weights_only=True)`` only, and why a file was refused."""

from __future__ import annotations

from pathlib import Path


def needs_more_than_tensors(exc: Exception) -> bool:
    """torch.load(weights_only=True) refused a global (a class or function) the pickle names; not a corrupt file."""
    text = str(exc).lower()
    return "weights only load failed" in text and "global" in text


def refused_pickle(path: Path, exc: Exception) -> str:
    """Why a checkpoint that needs more than tensors was refused (``torch.load(weights_only=True)``)."""
    detail = str(exc).strip().splitlines()
    found = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0] if detail else "")
    return (f"{path}: refused: the file is a pickle that needs more than tensors to load ({found[:160]}). The harness "
            "loads weights with torch.load(weights_only=True) only, because a full pickle can run any code. Save "
            "the weights as a state dict (torch.save(model.state_dict(), PATH)) or as safetensors")
