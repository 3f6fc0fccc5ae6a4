# syntax=docker/dockerfile:1
# ocr-study for CUDA nodes (GPU workers), from the official PyTorch CUDA runtime image: its torch is kept
# (requirements-cpu.txt pins the same version, which a +cuXXX build satisfies), Ray with its client server
# and this project are added. Runs as the unprivileged user `ocr`; carries no credentials.
# Build from the repository root:  docker build -f docker/cuda.Dockerfile -t ocr-study:0.1.0-cuda .
ARG TORCH_IMAGE=pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
FROM ${TORCH_IMAGE}

# Keep these equal to pyproject.toml and requirements-cpu.txt (tests/docker checks it).
ARG OCR_STUDY_VERSION=0.1.0
ARG RAY_VERSION=2.60.0

LABEL org.opencontainers.image.title="ocr-study-cuda" \
      org.opencontainers.image.description="OCR loss studies on Ray Tune with MLflow (CUDA node)" \
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

# The pins of requirements-cpu.txt as constraints; torch==X is met by the image's X+cuYYY, so it stays.
RUN sed -e 's/\[[^]]*\]//' requirements-cpu.txt > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt "ray[tune,client]==${RAY_VERSION}" . \
    && python -c "import torch; assert torch.version.cuda, 'the base image lost its CUDA build of torch'" \
    && rm -rf /tmp/constraints.txt /opt/ocr-study/build

USER 1000:1000
WORKDIR /home/ocr
CMD ["ocr-study", "--help"]
