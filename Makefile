# The commands the README names. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup constraints clean

# constraints.txt pins the exact tested versions (pyproject.toml keeps ranges), so a
# fresh machine installs what CI tested.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test,edge]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/disco-zoo eval resnet50-disco-2node

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Re-pin after changing a dependency: freezes the venv's versions of what pyproject needs.
constraints: $(STAMP)
	$(BIN)/python tools/freeze_constraints.py > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
