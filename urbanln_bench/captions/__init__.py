"""The caption pipeline (docs/methods.md#urbanln data level): captioners, refinement, CAPTURE, consensus."""
