# One image for every Supie service; the command picks the service:
#   docker run supie gateway | asr | meeting | webhook
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv
WORKDIR /app
# Dependencies first (cached layer), then the workspace itself.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/asr/pyproject.toml services/asr/pyproject.toml
COPY services/meeting/pyproject.toml services/meeting/pyproject.toml
COPY services/webhook/pyproject.toml services/webhook/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-workspace
COPY . .
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" SUPIE_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["supie"]
CMD ["gateway"]
