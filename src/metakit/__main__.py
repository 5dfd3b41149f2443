"""`python -m metakit ...` (and `torchrun ... -m metakit train ...`) run the command line."""

from metakit.cli import main

main()
