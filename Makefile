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

.PHONY: demo test lint typecheck checkov unit install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(TOOLS_STAMP): infra/checkov-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r infra/checkov-requirements.txt
	touch $(TOOLS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/enipin demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	for f in state_machines/*.asl.json; do $(BIN)/statelint --ignore=URI $$f || exit 1; done
	$(BIN)/cfn-lint infra/template.yaml

typecheck: $(STAMP)
	$(BIN)/mypy enipin tasks

# Zero failed checks, on the template as written and as transformed; every skip is in the
# template, next to the resource, with its reason. On the template as written checkov warns
# that it cannot apply SAM's Globals (Fn::ForEach is among the resources): the transformed
# file has them applied.
checkov: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m enipin.sandbox.sam infra/template.yaml GroupName=web-a,web-b -o $(SAM_TEMPLATE)
	$(TOOLS)/bin/checkov --config-file .checkov.yaml --file infra/template.yaml --file $(SAM_TEMPLATE)

test: lint typecheck checkov
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(TOOLS) build .pytest_cache .mypy_cache .ruff_cache
