"""The pupilflow command line and composition root: the only package that imports all the others."""
