# The targets CI runs (.ci/run calls `make test`): keep them the only way things are done.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint typecheck test test-docker test-docker-cold test-topology chaos check bench clean

install: $(STAMP)

$(STAMP): requirements-dev.txt be_flask/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check be_flask tests bench orchestration
	$(VENV)/bin/ruff format --check be_flask tests bench orchestration
	@if command -v shellcheck >/dev/null; then shellcheck vault/scripts/*.sh setup.sh .ci/run; \
	 else echo "shellcheck not installed: skipped (CI installs it)"; fi

typecheck: install
	cd be_flask && ../$(VENV)/bin/mypy --config-file ../pyproject.toml

test: install lint typecheck
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

# The Compose stacks on a real Docker engine (installs docker.io/docker-compose/debootstrap,
# starts dockerd if none answers, builds stand-in images for unpullable official ones).
test-docker: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m docker tests/docker $(PYTEST_ARGS)

# The same on a machine made bare first (engine, tools and images purged; root only): what the
# first `.ci/run` on a new machine does. Slow (debootstrap and every image); not run by CI.
test-docker-cold: install
	$(PY) -m tests.docker.engine purge
	$(MAKE) test-docker

# Multi-node Vault (Raft HA, transit auto-unseal) and backend replicas behind Apache, under
# load: a few minutes of their own, so kept out of `make test`; .ci/run runs both.
test-topology: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m topology tests $(PYTEST_ARGS)

# The fault matrix (tests/chaos): each dependency killed, frozen or restarted once under load;
# writes its figures into VAULT_INTEGRATION.md ("What the stack survives"). About 3 minutes
# on 2 cores; needs root (a tmpfs for the audit log), as setup.sh --local tests do.
chaos: install
	CHAOS_TABLE=1 PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

bench: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
