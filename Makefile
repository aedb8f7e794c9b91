# Two commands get a newcomer from clone to result: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/m2m demo

# lint: ruff (style and errors), ruff format (layout), import-linter (the package's layers, no cycles)
lint: $(STAMP)
	$(VENV)/bin/ruff check major2minor tests benchmarks tools
	$(VENV)/bin/ruff format --check major2minor tests benchmarks tools
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# docs: the documentation site (mkdocs, Material theme, API reference from the docstrings) into site/
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) runs .pytest_cache
