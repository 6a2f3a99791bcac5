# devplugin: `make demo` runs a simulated node end to end, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all setup sysdeps demo demo-once test lint typecheck unit bench soak protos clean image image-push

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# System packages some tests use (a real Prometheus + promtool, iproute2 for netns/veth tests).
# Installed when missing and we are root with apt; otherwise those tests skip with the reason.
# kubectl (for `kubectl kustomize deploy/...`) comes with the machine; without it the deploy
# rendering tests skip and say so.
sysdeps:
	@command -v kubectl >/dev/null 2>&1 || echo "WARNING: kubectl missing; tests/deploy rendering tests will be skipped"
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system test dependencies (prometheus, iproute2)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus iproute2 >/dev/null) \
	      || echo "WARNING: apt-get failed; Prometheus/netns tests will be skipped"; \
	  else \
	    echo "WARNING: prometheus/iproute2 missing and not installable here; those tests will be skipped"; \
	  fi; \
	fi

demo: setup
	$(BIN)/devplugin demo

LINT_DIRS := $(wildcard devplugin_core plugins tests examples bench scripts)

lint: setup
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/hadolint --failure-threshold info Dockerfile

typecheck: setup
	$(BIN)/mypy devplugin_core plugins

unit: setup sysdeps
	timeout -s INT -k 60 2400 $(BIN)/pytest -q

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/run_all.py

# The fault suite's soak-marked tests at full length: 100 kubelet restarts per plugin and a
# longer hostile-config fuzz, and kubelet outages up to 5 minutes (make test runs the same tests
# with ~20 restarts, 400 examples, 1 s and 15 s outages).
soak: setup
	DEVPLUGIN_SOAK_RESTARTS=100 DEVPLUGIN_FUZZ_EXAMPLES=3000 DEVPLUGIN_SOAK_OUTAGES=1,3,15,300 $(BIN)/pytest -q -m soak tests

protos: setup
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The demo, printed once (used by CI).
demo-once: setup
	$(BIN)/devplugin demo --once

# The container image devplugin:<version> (pyproject.toml), built from the Dockerfile with podman
# (no Docker engine): prints its size and the Python, grpcio and devplugin versions inside.
# Needs root and Debian's podman, buildah, runc and mmdebstrap; see deploy/README.md#image.
image:
	PYTHON=$(PYTHON) scripts/image.sh build

# Push it: make image-push REGISTRY=<registry>[/<path>] (log in first: podman login, or set
# DEVPLUGIN_PUSH_FLAGS="--authfile FILE").
image-push:
	@test -n "$(REGISTRY)" || { echo "usage: make image-push REGISTRY=<registry>[/<path>]"; exit 2; }
	scripts/image.sh push "$(REGISTRY)"
