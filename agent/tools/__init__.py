"""Command-line tools: the `isoedge` verbs, the demo, the verifier and a private broker."""
