"""The caption pipeline (DESIGN §5 data level): captioners, refinement, CAPTURE, consensus."""
