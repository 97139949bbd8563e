# Every target sets up what it needs first (idempotent): a fresh clone needs nothing else.
PY := .venv/bin/python
SETUP := scripts/setup_env.sh

.PHONY: setup test demo lint checkpoint clean-env

setup:
	$(SETUP) --with-comfyui --with-llm
	scripts/setup_browser.sh
	$(PY) -m toyworld.checkpoint install

checkpoint: setup

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m toyworld.demo

lint: setup
	$(PY) -m ruff check .

clean-env:
	rm -rf .venv .comfyui .cache
