"""The `lkserver` command line."""
