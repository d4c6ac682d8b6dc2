FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir '.[postgres]' \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin orchestrator \
    && mkdir -p /data && chown orchestrator /data
ENV PYTHONUNBUFFERED=1 DATA_DIR=/data
USER orchestrator
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
