# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8888
MODEL := model/fraud-model.joblib
# One pytest worker per core, a test file each (module fixtures stay whole): the suite's time
# is the CPU of the servers and trainings it starts, one after another without it. The tests
# marked exclusive (latency bounds) run alone afterwards, with no other test beside them.
TEST_WORKERS ?= 2

.PHONY: run test image bench lint format train test-tools clean

run: $(VENV)/.runtime $(MODEL) .env  ## serve on $(PORT) with 2 workers
	$(PY) -m app --host $(HOST) --port $(PORT) --workers 2 --timeout-keep-alive 75 --timeout-graceful-shutdown 20

test: $(VENV)/.dev test-tools  ## everything the tests need, then the whole suite
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m 'not exclusive'
	$(PY) -m pytest -m exclusive

image: test-tools  ## build the test and production images with buildah and run the production one (root)
	@sh scripts/build-image.sh

bench: $(VENV)/.dev $(MODEL)  ## sklearn vs default engine over loopback (needs wrk)
	$(PY) -m bench

lint: $(VENV)/.dev
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy app

format: $(VENV)/.dev
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

train: $(VENV)/.runtime  ## retrain the default model on generated data
	$(PY) -m app.train --out $(MODEL)

$(VENV)/.runtime: requirements.txt requirements-offline.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: Python 3.11+ is required (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-offline.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(MODEL): | $(VENV)/.runtime
	$(PY) -m app.train --out $@

.env: | .env.example
	@key=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))'); \
	sed "s|^API_KEY=.*|API_KEY=$$key|" .env.example > .env; chmod 600 .env; \
	echo "wrote .env with a new API key (shown once): $$key"

test-tools:  ## servers and linters from Debian and npm, where this machine can install them
	@sh scripts/install-test-tools.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis tools/node_modules
