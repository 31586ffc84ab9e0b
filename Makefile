# The two commands of the README. Both install what they need, so they work on a fresh machine.
PYTHON ?= python3
# `make book` renders the published study (BUNDLE) when it is in the checkout, in minutes;
# `make book PRESET=quick` (or smoke, ...) computes a study from scratch and renders that.
PRESET ?=
BUNDLE ?= published/decisive
# Debian font packages whose faces are the identities of the glyphs benchmark (the book's dataset).
FONT_PACKAGES = fonts-aenigma

.PHONY: book test install fonts system-deps

# Installed with apt-get when we are root and they are missing; otherwise a note says what to install.
fonts:
	@if dpkg -s $(FONT_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FONT_PACKAGES) >/dev/null) \
	  || echo "note: apt-get could not install $(FONT_PACKAGES); the glyphs dataset and its tests need them"; \
	else echo "note: not root: install the glyphs fonts yourself (sudo apt-get install $(FONT_PACKAGES))"; fi

# Fashion-MNIST (second real dataset) and Chromium (browser test of the book), for the full test suite.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium chromium-driver >/dev/null) \
	  || echo "note: apt-get could not install dataset-fashion-mnist/chromium; their tests will be skipped"; \
	else echo "note: not root: install dataset-fashion-mnist chromium chromium-driver yourself for the full test suite"; fi

install:
	$(PYTHON) -m pip install -q -e ".[dev]"

# Main job: the Jupyter Book in _build/html, from the published study or from scratch.
book: fonts install
	@if [ -n "$(PRESET)" ]; then re-analysis book --preset $(PRESET); \
	elif [ -f "$(BUNDLE)/bundle.json" ]; then re-analysis book --bundle $(BUNDLE); \
	else echo "note: no published study in $(BUNDLE): computing the quick preset from scratch"; \
	  re-analysis book --preset quick; fi

# One test file per process (pytest-xdist, as many as cores), one torch thread each: small
# models keep two processes busier than one process with two threads.
test: fonts system-deps install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder
