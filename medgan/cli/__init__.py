"""The ``medgan`` command line: one module per subcommand."""
