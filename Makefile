# RobustDx: `make run` starts the service, `make test` runs the tests. Both install what
# they need into .venv first (again whenever pyproject.toml changes).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
ROBUSTDX_DATA_DIR ?= data
export ROBUSTDX_DATA_DIR

.PHONY: run test install lock lint typecheck check zoo demo bench clean chromium dicom-tools pytriton

# requirements/dev.lock pins every package (make lock); installs are constrained by it, so
# `make run`, `make test` and CI get the same versions on every machine.
LOCK := requirements/dev.lock

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev,embedded]'
	@touch $(STAMP)

# Re-resolve the lock files after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python requirements/lock.py

install: $(STAMP)

run: $(STAMP)
	$(BIN)/robustdx run --port $(PORT)

# Chromium renders the HTML report in one test; it is skipped (with the reason) when no
# browser can be installed.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the HTML rendering test will be skipped"; }

# Orthanc (the PACS, with its DICOMweb plugin) and dcmtk (a modality) for the DICOM network
# tests; those tests are skipped (with the reason) when the packages cannot be installed.
dicom-tools:
	@{ command -v storescu >/dev/null 2>&1 && { command -v Orthanc || test -x /usr/sbin/Orthanc; } \
	  >/dev/null 2>&1 && test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so; } || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq orthanc orthanc-dicomweb dcmtk >/dev/null) \
	  || echo "orthanc/dcmtk not installed: the PACS tests will be skipped"; }

# A real Triton (PyTriton) serves models in the remote-model tests and the serving bench.
# PyTriton needs a Python with a shared libpython: Debian's python3.11, in a side venv
# (~/.cache/robustdx/pytriton-venv) that is never the service's. Those tests are skipped,
# with the reason, when it cannot be built.
pytriton: $(STAMP)
	@[ -x /usr/bin/python3.11 ] && /usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq python3.11 python3.11-venv >/dev/null) || true; }
	@$(BIN)/python bench/pytriton_side.py >/dev/null 2>&1 || \
	  echo "PyTriton side venv not built: the Triton tests will be skipped"

test: $(STAMP) chromium dicom-tools pytriton
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy app workers models

check: lint typecheck

zoo: $(STAMP)
	$(BIN)/python -m models.zoo.train

demo: $(STAMP)
	$(BIN)/python -m app.cli.demo --url http://127.0.0.1:$(PORT)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/attacks.py
	$(BIN)/python bench/audits.py
	$(BIN)/python bench/defenses.py
	$(BIN)/python bench/perturbations.py
	$(BIN)/python bench/dicom.py
	$(BIN)/python bench/readme_audit.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
