"""Benchmarks of speed and memory, one module each (``models``, ``data``, ``train``, ``loop``, ``enhance``).

Each module has ``add_arguments(parser)`` and ``run(args)`` and prints what it measured with a ratio against a
baseline run in the same process, so numbers from different machines are comparable by their ratios. The
command that parses and dispatches them, ``superfan bench``, is :mod:`superfan.commands.bench`.
"""
