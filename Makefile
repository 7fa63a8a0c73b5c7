# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create or reuse the in-repo environments (.venv, .venv-torch) through tools/setup_env.sh. The demos are the
# demos/ package, run from the repository root (python -m demos.X puts it on the path).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: env demo demo-detection demo-segmentation tour test clean-env

env:
	bash tools/setup_env.sh all

demo:
	bash tools/setup_env.sh main
	$(PY) -m demos.classification --out out/demo

# the detector's backbone is make demo's classifier (ImageNet's stand-in): made once, reused while it exists
out/demo/summary.json:
	$(MAKE) demo

demo-detection: out/demo/summary.json
	bash tools/setup_env.sh main
	$(PY) -m demos.detection --backbone-from out/demo --out out/demo-detection

demo-segmentation: out/demo/summary.json
	bash tools/setup_env.sh main
	$(PY) -m demos.segmentation --backbone-from out/demo --out out/demo-segmentation

tour:
	bash tools/setup_env.sh main
	$(PY) scripts/model_tour.py --out out/tour

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

clean-env:
	rm -rf .venv .venv-torch
