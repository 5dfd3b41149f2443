# Two commands do all the set-up: `make run` (train + evaluate the default recipe) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/protonet-omniglot-5w1s-quick
RECIPE ?= protonet-omniglot-5w1s-quick

.PHONY: run test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	@if [ -f $(RUN_DIR)/checkpoints/last.safetensors ]; then \
		$(BIN)/metakit train $(RECIPE) --out $(RUN_DIR) --resume; \
	else \
		$(BIN)/metakit train $(RECIPE) --out $(RUN_DIR); \
	fi
	$(BIN)/metakit eval $(RUN_DIR)

test: $(VENV)/.installed-dev
	$(BIN)/pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
