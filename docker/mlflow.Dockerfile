# syntax=docker/dockerfile:1
# The MLflow tracking server of a cluster: MLflow with its basic-auth app and the PostgreSQL driver.
# Runs as the unprivileged user `mlflow`. No credentials in the image: the admin user, the Flask secret
# and the database password come from the environment (see compose.yaml and .env.example).
FROM python:3.11.14-slim-bookworm

# Keep MLFLOW_VERSION equal to requirements-cpu.txt (tests/docker checks it).
ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG OCR_STUDY_VERSION=0.1.0

LABEL org.opencontainers.image.title="ocr-study-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (basic auth, PostgreSQL) for ocr-study" \
      org.opencontainers.image.version="${OCR_STUDY_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

RUN pip install "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" \
    && groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid mlflow --create-home --shell /bin/bash mlflow \
    && mkdir -p /var/lib/mlflow/artifacts /var/lib/mlflow/auth \
    && chown -R mlflow:mlflow /var/lib/mlflow

COPY docker/mlflow/basic_auth.ini /etc/mlflow/basic_auth.ini

USER 1000:1000
WORKDIR /var/lib/mlflow
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --retries=10 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
CMD ["mlflow", "server", "--app-name", "basic-auth", "--host", "0.0.0.0", "--port", "5000", "--workers", "2"]
