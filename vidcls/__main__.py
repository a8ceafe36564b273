"""`python -m vidcls ...` runs the command line (and `torchrun -m vidcls ...` trains distributed)."""

from vidcls.cli import main

main()
