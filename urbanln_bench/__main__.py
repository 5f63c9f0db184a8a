"""``python -m urbanln_bench``: the ``urbanln-bench`` command, so ``torchrun -m urbanln_bench run ...`` starts
it in every process (docs/torchrun.md)."""

from urbanln_bench.cli import main

if __name__ == "__main__":
    main()
