"""Validation before work: every option and output location a command takes is checked before anything is
rendered, trained or written (docs/hostile-inputs.md). A bad value costs the user a second, not the
minutes of work that would come before it fails, and never leaves a half-written result.

Each check raises a :class:`UserError` that names the option, says what was wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from urbanln_bench.errors import UserError

MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes larger ones; a split seed past this is a typo
MAX_SEEDS = 1000  # probe seeds per run: each is a full probe per cell (the paper uses 5)
MAX_TUNE_TRIALS = 10_000
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d{1,3})?)$")


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """'0-4' or '0,1,2' → [0, 1, 2, 3, 4]: distinct, ascending ranges, each in [0, MAX_SEED], at most
    MAX_SEEDS of them (the count is checked before a range is expanded)."""
    seeds: list[int] = []
    usage = f"{option} must look like '0-4' or '0,1,2' (non-negative integers), got '{text}'"
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
            else:
                lo = hi = int(part)
        except ValueError:
            raise UserError(usage) from None
        if lo < 0 or hi < 0:
            raise UserError(usage)
        if hi < lo:
            raise UserError(f"{option}: '{part}' is an empty (descending) range; write the low seed first, "
                            f"e.g. {hi}-{lo}")
        if hi > MAX_SEED:
            raise UserError(f"{option}: seed {hi} is over the maximum {MAX_SEED}")
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
            raise UserError(f"{option} '{text}' names more than {MAX_SEEDS} seeds (each is a full probe of every "
                            "cell; the paper uses 5); give fewer, e.g. 0-4")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise UserError(f"{option} names no seed, got '{text}'; e.g. 0-4")
    if len(set(seeds)) != len(seeds):
        duplicate = next(s for s in seeds if seeds.count(s) > 1)
        raise UserError(f"{option} names seed {duplicate} twice in '{text}'; each seed once, e.g. 0-4")
    return seeds


def check_device(device: str, option: str = "--device") -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present on this machine (checked before any work, even
    when every embedding is cached: a record must not say it ran on a device that does not exist)."""
    if not _DEVICE.match(device):
        raise UserError(f"{option} '{device}' is not a device; use cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{option} {device}: CUDA is not available on this machine (torch "
                            f"{torch.__version__}); use --device cpu")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option} mps: Apple MPS is not available on this machine; use --device cpu")
    return device


def check_count(value: int, option: str, low: int, high: int, hint: str = "") -> int:
    """An integer option within [low, high]."""
    if not low <= value <= high:
        raise UserError(f"{option} {value} is out of range: it must be between {low} and {high}"
                        f"{'; ' + hint if hint else ''}")
    return value


def check_tune(trials: int) -> int:
    return check_count(trials, "--tune", 0, MAX_TUNE_TRIALS, "0 turns tuning off")


def check_output_dir(path: Path, option: str = "--results") -> Path:
    """A folder the run can write records into: an existing writable folder, or one that can be made
    (its nearest existing parent is a writable folder). Nothing is created here."""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {path} is a file, not a folder; give a folder for the records")
        if not _writable(path):
            raise UserError(f"{option} {path} is not writable; give a folder you can write to")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, so the folder cannot be made")
    if not _writable(parent):
        raise UserError(f"{option} {path}: cannot make it, {parent} is not writable; give a folder you can write to")
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: permissions, and a probe file (made and removed at once) for
    what permissions do not show (read-only mounts, pseudo file systems, root's unrestricted access bits)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".urbanln-write-probe-"):
            pass
    except OSError:
        return False
    return True


def check_output_file(path: Path, option: str) -> Path:
    """A file path the command can write: not a folder, in a folder that exists (or can be made) and is writable."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} is not writable")
    check_output_dir(path.absolute().parent, option)
    return path


def check_input_dir(path: Path, option: str, what: str) -> Path:
    """A folder that must exist (e.g. the result store a leaderboard is made from)."""
    if not path.exists():
        raise UserError(f"{option} {path}: no such folder; give the folder that holds the {what}")
    if not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder of {what}")
    return path
