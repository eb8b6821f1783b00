"""``python -m ronin`` runs the ``ronin`` command."""

from ronin.cli import main

main()
