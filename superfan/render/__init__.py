"""Rendering: what a person reads or looks at, drawn from numbers computed elsewhere.

``tables`` (Tables 1 and 2 in Markdown), ``ced`` (the CED figure), ``faces`` (sample grids, overlays and
contact sheets of faces with landmarks), ``outputs`` (the files written beside an evaluation). Nothing here
computes a metric or runs a model, so an old ``results.json`` re-renders without either.
"""
