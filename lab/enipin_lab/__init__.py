"""The lab: the sandbox (local AWS in moto, deployed from the real template), the demo, the
benchmark and chaos. It runs from a clone of the repository and never ships to operators."""
