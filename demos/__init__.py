"""The demos: programs that run the whole project end to end on data they draw themselves.

Not part of the library (the wheel does not ship this package): they live in the checkout and run from its root,
where they find ``scripts/`` and ``benchmarks/`` to launch (:data:`demos.steps.REPO`).

- :mod:`demos.classification`: ``make demo`` (``python -m demos.classification --out out/demo``)
- :mod:`demos.detection`: ``make demo-detection`` (``python -m demos.detection --backbone-from out/demo ...``)
- :mod:`demos.shapes`: the shape-classification dataset (``python -m demos.shapes OUT``)
- :mod:`demos.scenes`: the detection scenes, a Pascal VOC folder (``python -m demos.scenes OUT``)
- :mod:`demos.segscenes`: segmentation scenes of four families (shapes, textures, colours, small), a Pascal VOC
  segmentation folder (``python -m demos.segscenes OUT --family textures``)
- :mod:`demos.steps`: what both demos share (numbered steps running the command-line tools, logs, checks, reports)
- ``templates/``: the reports, ``string.Template`` Markdown filled from a dict
"""
