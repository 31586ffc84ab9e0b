# The two commands of the README. Both install what they need, so they work on a fresh machine.
PYTHON ?= python3
PRESET ?= quick

.PHONY: book test install system-deps

# System packages: Fashion-MNIST (second real dataset) and Chromium (browser test of the book).
# Installed when apt-get is available and we are root; skipped (with a note) otherwise.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium chromium-driver >/dev/null) \
	  || echo "note: apt-get could not install dataset-fashion-mnist/chromium; their tests will be skipped"; \
	else echo "note: not root: install dataset-fashion-mnist chromium chromium-driver yourself for the full test suite"; fi

install:
	$(PYTHON) -m pip install -q -e ".[dev]"

# Main job: the study on the embedded mnist5k data, then the Jupyter Book in _build/html.
book: install
	re-analysis book --preset $(PRESET)

test: system-deps install
	$(PYTHON) -m pytest -q
