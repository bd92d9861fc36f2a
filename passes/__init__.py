"""Transforms, one module per pass. Installed as ``rewriter.passes``; each module registers its pass."""
