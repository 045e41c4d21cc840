# The two commands of the README work on a fresh clone: they create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins older boto3 and friends than the project: it gets a venv of its own.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The template as `sam deploy` would submit it (SAM transform, two groups), for checkov.
SAM_TEMPLATE := build/sam-template.json
# The AWS SAM CLI, in a venv of its own (its pins differ from checkov's and the project's).
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
# `sam build` needs the functions' runtime, Python 3.12, on PATH: the one on PATH, or pyenv's.
RUNTIME_PYTHON ?= $(firstword $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))
RUNTIME_BIN := build/runtime-bin

# mermaid's own parser (under Node) for the README's diagrams: tests/infra/test_pictures.py
NODE_STAMP := tests/infra/node_modules/.installed

.PHONY: demo playground test unit lint typecheck checkov sam deploy pictures install clean

# The CLI (with the core it ships) and, beside it, the lab with the test tools (lab/pyproject.toml).
$(STAMP): pyproject.toml lab/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . -e './lab[dev]'
	touch $(STAMP)

$(TOOLS_STAMP): infra/checkov-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r infra/checkov-requirements.txt
	touch $(TOOLS_STAMP)

$(SAM_STAMP): infra/sam-requirements.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r infra/sam-requirements.txt
	touch $(SAM_STAMP)

# A directory holding python3.12 alone, for PATH: the runtime sam build builds for.
$(RUNTIME_BIN)/python3.12:
	@test -n "$(RUNTIME_PYTHON)" || { echo "sam build needs Python 3.12, the functions' runtime (pyenv install 3.12, or your distribution's python3.12); or set RUNTIME_PYTHON=/path/to/python3.12" >&2; exit 1; }
	mkdir -p $(RUNTIME_BIN)
	ln -sf $(RUNTIME_PYTHON) $(RUNTIME_BIN)/python3.12

$(NODE_STAMP): tests/infra/package.json tests/infra/package-lock.json
	npm ci --prefix tests/infra --no-audit --no-fund --silent
	touch $(NODE_STAMP)

install: $(STAMP)

# The README's architecture picture, drawn by Graphviz from its source.
pictures:
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

demo: $(STAMP)
	$(BIN)/enipin demo

# The sandbox kept up as local AWS on the loopback, for the AWS CLI and enipin in a second shell
# (README: the playground). Ctrl-C stops it. PORT=... picks another port.
PORT ?= 5599
playground: $(STAMP)
	$(BIN)/enipin-lab up --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	for f in state_machines/*.asl.json; do $(BIN)/statelint --ignore=URI $$f || exit 1; done
	$(BIN)/cfn-lint infra/template.yaml

typecheck: $(STAMP)
	$(BIN)/mypy enipin tasks lab/enipin_lab

# Zero failed checks, on the template as written and as transformed; every skip is in the
# template, next to the resource, with its reason. On the template as written checkov warns
# that it cannot apply SAM's Globals (Fn::ForEach is among the resources): the transformed
# file has them applied.
checkov: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m enipin_lab.sandbox.sam infra/template.yaml GroupName=web-a,web-b -o $(SAM_TEMPLATE)
	$(TOOLS)/bin/checkov --config-file .checkov.yaml --file infra/template.yaml --file $(SAM_TEMPLATE)

# The real SAM CLI on the README's own commands: tests/infra/test_sam_build.py runs them in a
# copy of the repo (validate --lint, build, package to an S3 stand-in on the loopback) and checks
# the artifact. make test runs it with the rest; this target runs it alone.
sam: $(STAMP) $(SAM_STAMP) $(RUNTIME_BIN)/python3.12
	ENIPIN_SAM=$(abspath $(SAM_VENV)/bin/sam) ENIPIN_RUNTIME_BIN=$(abspath $(RUNTIME_BIN)) $(BIN)/pytest -q tests/infra/test_sam_build.py

# For a person with credentials: the parameters with what each allows, then SAM's guided deploy
# (its answers are saved in samconfig.toml). Any SAM CLI on PATH works as well: see README.
deploy: $(STAMP) $(SAM_STAMP) $(RUNTIME_BIN)/python3.12
	$(BIN)/python infra/show_parameters.py infra/template.yaml
	PATH=$(abspath $(RUNTIME_BIN)):$(abspath $(SAM_VENV)/bin):$$PATH sam build
	PATH=$(abspath $(SAM_VENV)/bin):$$PATH sam deploy --guided

# The fast loop: unit tests and the ASL checks, no sandbox scenario (a few seconds).
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/infra/test_asl_retry_catch.py

test: lint typecheck checkov $(SAM_STAMP) $(RUNTIME_BIN)/python3.12 $(NODE_STAMP)
	ENIPIN_SAM=$(abspath $(SAM_VENV)/bin/sam) ENIPIN_RUNTIME_BIN=$(abspath $(RUNTIME_BIN)) $(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(TOOLS) $(SAM_VENV) build .aws-sam .pytest_cache .mypy_cache .ruff_cache
