"""The Dash app and the command-line interface."""
