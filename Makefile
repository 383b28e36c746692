# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "setuptools>=70" wheel
	# Pinned: both lie on this kind of machine's disk; anything else downloads several GB.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Train PPL (tiny ViT) on one generator of the embedded mini suite, test on all, print the table beside the
# published mini leaderboard rows.
demo: $(STAMP)
	$(BIN)/harness run --detector ppl --suite mini

test: $(STAMP)
	@# CI also installs headless Chromium so the leaderboard page is checked in a real browser.
	@if [ -n "$$CI" ] && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser tests will be skipped"; fi
	HF_HUB_OFFLINE=1 $(BIN)/pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
