"""Ray Tune sweeps over Super-FAN training: thin entry points over one driver, one job per module.

``python sweeps/loss_weights.py`` (the main job), ``sweeps/block_layouts.py``, ``sweeps/augmentation.py``;
each runs embedded with no arguments and unchanged under ``ray job submit --working-dir . -- python ...``.

* :mod:`sweeps.cli` -- options, :func:`~sweeps.cli.plan` (sweep file + command line -> ``Sweep``), main
* :mod:`sweeps.settings` -- ``SweepSettings`` (``sweep:``), the sweep file as one typed model, ``Sweep``
* :mod:`sweeps.space` -- the search grammar (``search.<kind>``) -> specs -> Tune domains; layouts
* :mod:`sweeps.inputs` -- synthetic shards and the teacher FAN, when the user gives none
* :mod:`sweeps.tuner` -- the trainable, ASHA, concurrency, building and restoring the ``Tuner``
* :mod:`sweeps.searcher` -- Optuna TPE (``ResumableOptunaSearch``)
* :mod:`sweeps.results` -- trial rows, the results table, promotion of the champion

When the sweep ends, the best report of any trial is promoted to ``<storage>/champions/<name>/``
(:mod:`superfan.champion`). The library (``superfan``) never imports ``sweeps``.

Storage layout under ``--storage`` (a directory or ``s3://bucket/prefix``; default ``./.superfan``)::

    data/synthetic-*/            synthetic shards packed when no data is given
    teachers/<key>.json          pointer to the teacher FAN checkpoint for a (FAN, data) combination
    runs/teacher-*/              the teacher's Train run
    sweeps/<name>/               the Tune experiment (restorable with --resume) + sweep.json (settings)
    trials/<name>/<name>-<trial id>/  each trial's Train run (so named in the Ray dashboard) and checkpoints
    champions/<name>/            promoted versions + the ``latest`` pointer
"""
