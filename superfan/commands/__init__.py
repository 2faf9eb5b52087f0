"""The ``superfan`` subcommands, one module each, dispatched by :mod:`superfan.cli`.

Each module exposes ``add_arguments(parser)`` (``evaluate`` also takes the command name, for ``report``) and
``run(args) -> int``, and imports torch or Ray only inside ``run``, so ``superfan --help`` stays fast.
"""
