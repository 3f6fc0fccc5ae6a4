# syntax=docker/dockerfile:1
# ocr-study for CPU nodes (Ray head and CPU workers): the pinned CPU stack of requirements-cpu.txt, torch
# from PyTorch's CPU index, Ray with its client server, and this project. Runs as the unprivileged user
# `ocr`; carries no credentials (MLflow and Ray secrets come from the environment at run time).
# Build from the repository root:  docker build -f docker/cpu.Dockerfile -t ocr-study:0.1.0-cpu .
FROM python:3.11.14-slim-bookworm

# Keep these equal to pyproject.toml and requirements-cpu.txt (tests/docker checks it).
ARG OCR_STUDY_VERSION=0.1.0
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG RAY_VERSION=2.60.0

LABEL org.opencontainers.image.title="ocr-study-cpu" \
      org.opencontainers.image.description="OCR loss studies on Ray Tune with MLflow (CPU node)" \
      org.opencontainers.image.version="${OCR_STUDY_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 1000 ocr \
    && useradd --uid 1000 --gid ocr --create-home --shell /bin/bash ocr \
    && mkdir -p /shared \
    && chown ocr:ocr /shared

WORKDIR /opt/ocr-study
COPY requirements-cpu.txt pyproject.toml README.md ./
COPY ocr ./ocr
COPY pipelines ./pipelines
COPY study ./study
COPY results ./results
COPY record ./record
COPY storage ./storage

# requirements-cpu.txt as constraints (pip refuses extras there): every dependency at its pinned version.
RUN sed -e 's/\[[^]]*\]//' requirements-cpu.txt > /tmp/constraints.txt \
    && pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install -c /tmp/constraints.txt "ray[tune,client]==${RAY_VERSION}" . \
    && rm -rf /tmp/constraints.txt /opt/ocr-study/build

USER 1000:1000
WORKDIR /home/ocr
CMD ["ocr-study", "--help"]
