"""``python -m vecmigrate`` runs the command line."""

from vecmigrate.cli.app import main

main()
