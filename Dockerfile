# syntax=docker/dockerfile:1
# One image for the API (`codeactions serve`, the default command) and the sandbox worker
# (`codeactions worker`), built from the same lock files as `make`.

# --- The console: npm packages from the lock file, a strict type check, the Vite build. -------
# Vite needs Node 20.19 or later; Debian 12's nodejs (18) is too old to build it, so this stage
# uses the Node image. User JavaScript runs on Debian's nodejs in the final image.
FROM node:22-bookworm-slim AS console
WORKDIR /build/console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY console/ ./
# vite.config.ts writes into ../src/codeactions/console/dist.
RUN mkdir -p /build/src/codeactions/console \
    && node_modules/.bin/tsc --noEmit \
    && node_modules/.bin/vite build --logLevel warn

# --- Python: the service's venv and the separate venv of user Python code. --------------------
FROM python:3.11-slim-bookworm AS python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY runtime/requirements.txt runtime/requirements.txt
RUN python -m venv /app/.venv-runtime \
    && /app/.venv-runtime/bin/pip install -q -r runtime/requirements.txt
COPY requirements.lock requirements.lock
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install -q -r requirements.lock
# Installed from /app/src as `make` does (editable): the runner's supervisor puts the directory
# holding the codeactions package on the path of the user-code interpreter, which must be this
# one and not the service's site-packages with all its libraries.
COPY pyproject.toml ./
COPY src/ src/
RUN /app/.venv/bin/pip install -q --no-deps -e . \
    && /app/.venv/bin/python -m compileall -q src

# --- The image. -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
# What the runner uses at run time: Go compiles Go codes, Node runs JavaScript, ffmpeg serves
# user code's pydub (as in the original image), iptables filters the sandboxes' egress, iproute2
# builds their network namespaces.
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        golang-go nodejs ffmpeg iptables iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The API's user. The worker runs as root instead: its sandbox runner gives every slot its own
# uid (setuid/setgid), builds mount and network namespaces and installs packet filters, and
# only root can do that; each run then drops to its slot's unprivileged uid before user code
# starts. The API, with CODEACTIONS_RUNNER_DISPATCH=rabbitmq, runs no user code: it runs as
# this user with no capabilities (see docker-compose.yml and deploy/).
RUN groupadd --system --gid 10001 codeactions \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin codeactions \
    && mkdir -p /var/lib/codeactions/spool \
    && chown -R 10001:10001 /var/lib/codeactions
WORKDIR /app
COPY --from=python /app /app
# The console is served from the package's directory.
COPY --from=console /build/src/codeactions/console/dist /app/src/codeactions/console/dist
# The service listens on 127.0.0.1 by default: in a container it must take connections from
# outside, also when only the original's variables are set. The runner's interpreters are this
# image's paths.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CODEACTIONS_HOST=0.0.0.0 \
    CODEACTIONS_WORKER_HOST=0.0.0.0 \
    CODEACTIONS_RUNNER_PYTHON=/app/.venv-runtime/bin/python \
    CODEACTIONS_RUNNER_NODE=/usr/bin/node \
    CODEACTIONS_RUNNER_GO=/usr/bin/go \
    CODEACTIONS_SPOOL_DIR=/var/lib/codeactions/spool
# The API's user by default; the worker is started as root (user 0), see above.
USER 10001:10001
# 8050: the API. 8051: a worker's /healthz, /health and /metrics.
EXPOSE 8050 8051
ENTRYPOINT ["codeactions"]
CMD ["serve"]
