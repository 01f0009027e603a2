"""The ``airlock`` commands, one module per noun; airlock/cli.py gathers them."""
