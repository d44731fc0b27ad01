# Multi-stage: build a virtualenv with the package, then copy it into a clean slim image.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# A current pip: older resolvers fail on extras that two dependencies spell differently
# (lxml[html_clean] from both trafilatura and readability-lxml).
RUN python -m venv /opt/aggregator && /opt/aggregator/bin/pip install --upgrade pip
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
RUN /opt/aggregator/bin/pip install .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/aggregator/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin aggregator \
    && mkdir -p /data /config && chown aggregator /data
COPY --from=build /opt/aggregator /opt/aggregator
COPY config/container.toml /config/aggregator.toml
USER aggregator
WORKDIR /
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["aggregator", "health", "--config", "/config/aggregator.toml"]
CMD ["aggregator", "run", "--config", "/config/aggregator.toml"]
