# One command for the main job, one for the tests (the latter is what CI runs).
PYTHON ?= python

.PHONY: install demo test lint format type

install:
	# torch first, pinned to the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
	$(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -e ".[dev,video]"

demo:
	MUJOCO_GL=egl $(PYTHON) examples/train_fetch_reach.py --timesteps 5000 --out demo_output

test:
	$(PYTHON) -m pytest -q --durations=15 tests

lint:
	ruff check . && ruff format --check .

format:
	ruff format . && ruff check --fix .

type:
	mypy sb3_hher
