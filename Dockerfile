# etcdpy: one image for every member. Build from the repo root: docker build -t etcdpy .
FROM python:3.11-slim
WORKDIR /opt/etcdpy
COPY pyproject.toml README.md ./
COPY app ./app
COPY raft ./raft
COPY store ./store
COPY v2api ./v2api
COPY v3gateway ./v3gateway
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/etcd etcd \
    && mkdir -p /var/lib/etcd && chown etcd /var/lib/etcd
USER etcd
EXPOSE 2379 2380
# The same flags as etcd; ETCD_* environment variables work too.
ENTRYPOINT ["etcdpy"]
