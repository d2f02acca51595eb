# Worker container for Dataflow (sdk_container_image) and Flink (environment_config), with GPU support.
#   make container IMAGE=us-docker.pkg.dev/PROJECT/REPO/toonbeam-worker:0.1.0
# The Python minor version and the Beam version must match the machine that submits the job.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk
# Google publishes the launcher base under dated release tags; pin one with --build-arg FLEX_LAUNCHER_TAG.
ARG FLEX_LAUNCHER_TAG=latest
# hadolint ignore=DL3007
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${FLEX_LAUNCHER_TAG} AS flex_launcher

FROM nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04
ARG PYTHON_VERSION
ARG BEAM_VERSION

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    KERAS_HOME=/opt/keras \
    TF_CPP_MIN_LOG_LEVEL=2

# Ubuntu 22.04 ships Python 3.10; the deadsnakes PPA has the other minors. Distribution packages follow
# the pinned base image, so they are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent curl \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The Beam SDK harness (boot entry point) of the same Beam version, and the Flex Template launcher,
# so that one image serves as template launcher and as worker (Dataflow overrides the entry point).
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
COPY --from=flex_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/toonbeam/pipeline/flex_template.py

WORKDIR /opt/toonbeam
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms
# TensorFlow with its CUDA libraries from pip, then the project with the cloud extras (its own version
# ranges are in setup.py, which hadolint cannot see).
# hadolint ignore=DL3013
RUN pip install "apache-beam[gcp]==${BEAM_VERSION}" "tensorflow[and-cuda]>=2.16,<3" \
    && pip install ".[gcp,aws]"

# Bake the VGG19 weights into Keras's cache so that workers never download at start-up.
RUN python -c "from transforms.nst.extractors import ensure_weights_available as e; e('vgg19', 'imagenet')"

ENTRYPOINT ["/opt/apache/beam/boot"]
