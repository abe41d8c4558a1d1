# The GPU image: vLLM's CUDA build and this service, run as a non-root user.
#   docker build -t deepinfra-serve:0.1.0 .
# CUDA comes with the torch wheels vLLM depends on; the node provides the driver (NVIDIA
# container runtime / device plugin).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    DEEPINFRA_SERVE_HOST=0.0.0.0 \
    DEEPINFRA_SERVE_PORT=8000 \
    DEEPINFRA_SERVE_DEVICE=cuda \
    DEEPINFRA_SERVE_CARD=/etc/deepinfra-serve/card.yaml \
    DEEPINFRA_SERVE_CACHE_DIR=/models/deepinfra-serve

# gcc: Triton and vLLM compile small kernels at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 app \
 && useradd --uid 1000 --gid app --create-home --home-dir /home/app app \
 && mkdir -p /models /etc/deepinfra-serve \
 && chown app:app /models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[gpu]'
COPY model_cards ./model_cards
# A card baked in for `docker run`; the Helm chart mounts the release's card over it.
RUN cp model_cards/mythomax-l2-13b-turbo.yaml /etc/deepinfra-serve/card.yaml

USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m CMD \
  python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live').status != 200)"
ENTRYPOINT ["deepinfra-serve"]
CMD ["serve"]
