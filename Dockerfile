# batchemo in a container: the package installed from this checkout, with its bundled default
# model, run as a non-root user.
#
# Build:
#   docker build -t batchemo .
#   docker build --build-arg EXTRAS=ray -t batchemo:ray .      # adds Ray Data (--engine ray)
#   docker build --build-arg BASE=registry.example/python:3.11-slim -t batchemo .
# BASE must provide `python3` (>= 3.11) with its `venv` module; `pip` and `python` come from the
# venv in /opt/venv, so a base without them on PATH (e.g. Debian with python3-venv) works too.
#
# Run (the container works in /data; mount your archive there):
#   docker run --rm -v "$PWD:/data" --user "$(id -u):$(id -g)" batchemo \
#       run -i photos/ -o results.parquet
#   docker run --rm batchemo train --help
# `--user` makes the outputs yours; without it the container runs as `batchemo` (uid 1000),
# which must be allowed to write to the mounted folder.
#
# Ray (--engine ray, image built with EXTRAS=ray): Ray's object store lives in /dev/shm, which
# Docker caps at 64 MB by default, so Ray falls back to slow disk spilling or fails. Give it room:
#   docker run --rm --shm-size=2g -v "$PWD:/data" batchemo:ray run --engine ray -i videos/ ...
# (Ray sizes its store at about 30% of the container's memory; on Kubernetes mount an emptyDir
# with medium: Memory at /dev/shm.)
#
# One stage on purpose: nothing is compiled, so a build stage would save nothing, and the layer
# order below (dependencies from pyproject.toml, then the code) lets a code change rebuild only
# the last small layer.

ARG BASE=python:3.11-slim
FROM ${BASE}

# Optional extras of the package, comma-separated (e.g. "ray"); empty = the core package.
ARG EXTRAS=""

RUN useradd --create-home --uid 1000 --user-group batchemo \
 && mkdir /data \
 && chown batchemo:batchemo /data \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/batchemo-src
# Dependencies first, listed from pyproject.toml alone (versions: its ranges), so that this big
# layer (TensorFlow) stays cached while only the code changes.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e.strip() for e in sys.argv[1].split(',') if e.strip()]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
      "${EXTRAS}" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The package itself, from this checkout (with the default model under batchemo/models/); its
# dependencies, extras included, are already in place.
COPY README.md ./
COPY batchemo ./batchemo
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && rm -rf build ./*.egg-info \
 && python -c "import batchemo, cv2, tensorflow"

USER 1000:1000
WORKDIR /data
ENTRYPOINT ["batchemo"]
CMD ["--help"]
