"""Allow `python -m qwenocr`."""

from qwenocr.cli import main

main()
