# The service's image, run as a non-root user. By default the GPU build (vLLM's CUDA wheels);
# VARIANT=cpu builds the same image over vLLM's CPU build, for machines without a GPU.
#   docker build -t deepinfra-serve:0.1.0 .
#   docker build --build-arg VARIANT=cpu \
#     --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t deepinfra-serve:0.1.0-cpu .
# CUDA comes with the torch wheels vLLM depends on; the node provides the driver (NVIDIA
# container runtime / device plugin). The CPU build needs torch's CPU wheel, which PyPI lacks:
# give pip an index or a folder that has it (PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS). Offline
# builds take every package from a wheelhouse: PIP_FIND_LINKS=<its URL> PIP_NO_INDEX=1.
# BASE: any Debian bookworm image with python3 (3.11) and its venv module.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG VARIANT=gpu
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models \
    DEEPINFRA_SERVE_HOST=0.0.0.0 \
    DEEPINFRA_SERVE_PORT=8000 \
    DEEPINFRA_SERVE_DEVICE=auto \
    DEEPINFRA_SERVE_CARD=/etc/deepinfra-serve/card.yaml \
    DEEPINFRA_SERVE_CACHE_DIR=/models/deepinfra-serve

# gcc: Triton and vLLM compile small kernels at run time; libnuma1: vLLM's CPU kernels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 app \
 && useradd --uid 1000 --gid app --create-home --home-dir /home/app app \
 && mkdir -p /models /etc/deepinfra-serve \
 && chown app:app /models \
 && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The CPU build's torch pulls torchvision, torchaudio and torchcodec built for CUDA torch; beside
# the CPU torch they break `import transformers`, and text generation needs none of them.
RUN pip install ".[${VARIANT}]" \
 && if [ "${VARIANT}" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec; fi
COPY model_cards ./model_cards
# A card baked in for `docker run`; the Helm chart mounts the release's card over it.
RUN if [ "${VARIANT}" = cpu ]; then card=dev/smollm2-135m-instruct.yaml; \
    else card=mythomax-l2-13b-turbo.yaml; fi \
 && cp "model_cards/${card}" /etc/deepinfra-serve/card.yaml

USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m CMD \
  python -c "import os,sys,urllib.request; port = os.environ['DEEPINFRA_SERVE_PORT']; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live').status != 200)"
ENTRYPOINT ["deepinfra-serve"]
CMD ["serve"]
