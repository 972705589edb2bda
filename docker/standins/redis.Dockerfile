# Stand-in for the public redis image, for scripts/test-compose on machines that reach no image registry:
# Debian's redis-server 7.0 with the behaviour of the official image that docker-compose.yml relies on
# (the command is `redis-server ...`, redis-cli is on PATH, protected mode off so that other containers connect).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
