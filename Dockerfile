# syntax=docker/dockerfile:1
#
# One image for every devplugin plugin; the DaemonSet picks the plugin with its args
# (`devplugin run rdma-shared|sriov-net|rebel-npu ...`, see deploy/).
#
#   docker build -t <registry>/devplugin:0.2.0 .        # Docker, public base image and PyPI
#   make image                                         # podman, no Docker engine (below)
#
# `make image` (scripts/image.sh) builds this same file with podman: the base image is made
# locally with mmdebstrap from the machine's apt sources; the machine's apt settings, a
# wheelhouse made by the machine's pip and a pip.conf pointing at it are mounted at /mnt (an
# empty directory of every Debian image, so no layer keeps a trace) and named by the build
# args APT_CONFIG and PIP_CONFIG_FILE. Unset (docker build), apt and pip read their usual
# configuration: the base image's apt sources and PyPI.
#
# Debian slim, because the RDMA plugin's optional verbs backend is rdma-core's pyverbs, which
# only works from the distribution's package (python3-pyverbs, built against the same
# libibverbs) and the distribution's Python 3.11. The build stage makes a virtualenv with
# --system-site-packages (so pyverbs stays importable) and installs the project and its
# dependencies as wheels, then removes pip and setuptools from it; the final stage copies that
# venv and has no compiler, pip, pip cache or apt lists (tests/image checks the built image).
#
# Runs as UID 0 on purpose (and hadolint's DL3002 is silenced for that reason): the kubelet's
# /var/lib/kubelet/device-plugins directory and its kubelet.sock are root-only, and a device
# plugin must create its socket there. The DaemonSets drop every capability, forbid privilege
# escalation and mount the root filesystem read-only, so UID 0 reaches nothing else.

ARG DEBIAN_TAG=bookworm-slim

FROM debian:${DEBIAN_TAG} AS build
# Extra apt / pip configuration for this build only (see the header); normally unset.
ARG APT_CONFIG
ARG PIP_CONFIG_FILE
# Package versions come from the pinned Debian release; rebuild the image for security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY devplugin_core/ devplugin_core/
COPY plugins/ plugins/
# The project's own dependency ranges (pyproject.toml) apply; no build tools are needed since
# every dependency ships wheels for CPython 3.11 on amd64 and arm64 (pip's index, or the
# wheelhouse that make image mounts at /wheels). Bytecode is compiled here: the root
# filesystem is read-only at run time, so without it every start would compile every import.
RUN python3 -m venv --system-site-packages /opt/devplugin \
    && /opt/devplugin/bin/pip install --no-cache-dir /src \
    && /opt/devplugin/bin/pip uninstall --yes --no-cache-dir pip setuptools \
    && /opt/devplugin/bin/devplugin list

FROM debian:${DEBIAN_TAG}
# The project's version (pyproject.toml; make image passes it, tests/image checks the default).
ARG VERSION=0.2.0
ARG APT_CONFIG
LABEL org.opencontainers.image.title="devplugin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Kubernetes device plugins: rdma-shared, sriov-net, rebel-npu" \
      org.opencontainers.image.licenses="Apache-2.0"
# python3: the interpreter the venv points at. python3-pyverbs + ibverbs-providers (rdma-core):
# the RDMA verbs backend of rdma-shared (used only with --host-root /). Versions as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pyverbs ibverbs-providers \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/devplugin /opt/devplugin
ENV PATH=/opt/devplugin/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# UID 0 on purpose: the kubelet's device-plugins directory is root-only (see the header).
# hadolint ignore=DL3002
USER 0
ENTRYPOINT ["devplugin"]
CMD ["list"]
