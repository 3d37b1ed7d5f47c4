# One image for every Supie service; the command picks the service:
#   docker run supie gateway | asr | meeting | webhook
# Reproducible: uv pinned, dependencies exactly as uv.lock says (`uv sync --frozen`), no dev group.
# Every workspace member's pyproject.toml is found by the first stage, so a new service needs no
# edit here.
FROM python:3.11-slim AS manifests
COPY libs /src/libs
COPY services /src/services
RUN find /src -type f ! -name pyproject.toml -delete && find /src -type d -empty -delete

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first (a cached layer while uv.lock is unchanged), then the workspace itself.
COPY pyproject.toml uv.lock ./
COPY --from=manifests /src/ ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-install-workspace
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" SUPIE_DATA_DIR=/data
VOLUME ["/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["supie"]
CMD ["gateway"]
