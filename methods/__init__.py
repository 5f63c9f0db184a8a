"""Built-in methods. Each registers through the ``urbanln_bench.methods`` entry-point group in
pyproject.toml, exactly as a third-party plugin does; they ship as ``urbanln_bench.builtin.methods``."""
