# imgsim in a container: the HTTP API (`imgsim serve`, the default command) or the dashboard
# (`streamlit run app.py`), as a non-root user, with the collection and the index mounted (compose.yaml).
# BASE: any Debian image with Python 3.11 as `python`/`pip` on PATH (docs/api.md: building where Docker Hub
# cannot be reached).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# OpenMP for the CPU runtimes (faiss, OpenVINO, TensorFlow); nothing else outside Python.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 imgsim \
    && mkdir -p /data/images /data/index /home/imgsim/.keras \
    && chown imgsim:imgsim /data/index /home/imgsim/.keras

WORKDIR /app
# Dependencies first: they change less often than the code, so this layer stays cached.
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY imgsim ./imgsim
RUN pip install --no-deps . && rm -rf build *.egg-info
# The dashboard: its entry script, settings and demo collection. The code stays root's; static/ is written at
# start-up (Plotly.js, map previews), so it belongs to the user the servers run as.
COPY . /app
RUN chown -R imgsim:imgsim /app/static

USER imgsim
ENV HOME=/home/imgsim IMGSIM_IMAGES=/data/images IMGSIM_INDEX=/data/index
# OpenVINO's conversion sends telemetry from forked processes unless opted out (~/intel/openvino_telemetry); a
# fork while the index's search runs hung an index run here (2026-12-01), and the container has no internet to send to.
RUN opt_in_out --opt_out
EXPOSE 8600 8501

# The API's /v1/info (with the token when one is mounted), or another URL: the dashboard sets
# IMGSIM_HEALTH_URL=http://127.0.0.1:8501/_stcore/health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD python -c "import os, urllib.request as u; \
t = '/run/secrets/imgsim_token'; \
h = {'Authorization': 'Bearer ' + open(t).read().strip()} if os.path.exists(t) else {}; \
u.urlopen(u.Request(os.environ.get('IMGSIM_HEALTH_URL', 'http://127.0.0.1:8600/v1/info'), headers=h), timeout=4)"

# A non-loopback address needs the token (mount it as the secret imgsim_token; see compose.yaml).
CMD ["imgsim", "serve", "/data/index", "--host", "0.0.0.0", "--token-file", "/run/secrets/imgsim_token"]
