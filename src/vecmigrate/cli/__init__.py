"""The ``vecmigrate`` command line."""
