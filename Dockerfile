FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir '.[postgres]'
ENV PYTHONUNBUFFERED=1
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
